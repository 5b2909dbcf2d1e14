//! HTTPS with rustls: certificate loading and live reload (being written).
