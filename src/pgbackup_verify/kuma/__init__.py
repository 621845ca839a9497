"""Uptime Kuma push: routing checks to monitors, the verdict per monitor, and the reporter plugin."""
