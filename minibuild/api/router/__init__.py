"""The API's routers, one per group of endpoints (moby api/server/router/)."""
