"""The application layer: sequencing, integration, publishing and queries. Storage is reached through ports."""
