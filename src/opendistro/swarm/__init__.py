"""Sans-I/O swarm policy: picking pieces, choking, bandwidth."""
