"""The gRPC edge: servicers (thin adapters), error mapping, server construction. The only layer importing grpc."""
