"""HTTP routes of the v1 API."""
