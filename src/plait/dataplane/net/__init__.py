"""Transport security of the data plane: TLS settings compiled from xDS (`tls_config`),
the TLS material each process loads and reloads (`tls_store`), and the accept path of
listeners that speak TLS, or TLS and plaintext on one port (`permissive`)."""
