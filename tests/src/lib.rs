//! Harness for the end-to-end tests: mock vendors and a gateway on loopback.
