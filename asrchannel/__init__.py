"""Channel setup shared by every process that speaks the wire: TLS (and mTLS) channels,
HTTP CONNECT proxy settings, the error <-> gRPC status mapping and server-side
authorisation from the peer certificate."""
