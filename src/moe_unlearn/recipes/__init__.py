"""End-to-end recipes composed from the library (the demo)."""
