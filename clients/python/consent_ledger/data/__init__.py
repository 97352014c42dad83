"""Data files of the pure core (the HL7 code tables); a package so that importlib.resources finds them."""
