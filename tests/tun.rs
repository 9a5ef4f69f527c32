//! `hostkit tun`: end-to-end tests in private network namespaces.
