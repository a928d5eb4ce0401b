"""Small helpers shared by every component."""
