//! Fetch-through never hands a client bytes that do not match their digest. Filled in by the
//! hardening work.
