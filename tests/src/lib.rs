//! Helpers shared by the end-to-end tests: start a server on a loopback port, open a raw ADS
//! stream, send requests and read responses with bounded waits.
