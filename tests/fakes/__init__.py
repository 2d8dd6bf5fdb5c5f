"""Test doubles that speak real protocols over real sockets: an OSS server
(oss_server, in modules along its concerns), an HTTP server that misbehaves
on purpose, and a real nginx under a test configuration."""
