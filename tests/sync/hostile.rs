//! A hostile or broken parent (stand-ins speaking just enough HTTP): what it cannot make a
//! child do. Filled in by the hardening work.
