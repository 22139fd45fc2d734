//! A fake GoEnhance server on loopback.
