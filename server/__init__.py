"""TopMail tracking service: product views and e-mail events over gRPC."""
