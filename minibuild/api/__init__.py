"""The daemon's HTTP API, Engine API 1.40 (moby api/server/): server, routers, stream formatting."""

import logging

# A library stays quiet unless the application configures logging (`minibuild daemon` does).
logging.getLogger("minibuild").addHandler(logging.NullHandler())
