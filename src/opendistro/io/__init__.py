"""Trio drivers: the only part of opendistro that touches sockets, files and clocks."""
