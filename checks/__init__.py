"""The health checks: each test reads like a line of the incident report it prevents."""
