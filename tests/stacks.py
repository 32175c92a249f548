"""The config/stack.toml documents the fast tests share: the committed one, with a host
`prod` (project hello-prod) and a two-node cluster's hosts added as each test needs."""
from pathlib import Path

from tasks.source.stack import loads

# The example's config/stack.toml as the tests know it: a copy of their own, so that a
# project adopted with `inv init` (another [app], its own hosts) leaves them green.
EXAMPLE_STACK = Path(__file__).resolve().parent / "example-stack.toml"
COMMITTED = EXAMPLE_STACK.read_text()
PROD = """
[hosts.prod]
address = "203.0.113.10"
directory = "/srv/hello"
project = "hello-prod"
"""
# prod on its own port, as a host beside another stack would be.
PROD_8080 = PROD.replace('project = "hello-prod"', 'http_port = 8080\nproject = "hello-prod"')
NODES = """
[hosts.node1]
address = "10.0.0.1"
directory = "/srv/hello"
[hosts.node2]
address = "10.0.0.2"
directory = "/srv/hello"
"""
SWARM = '[clusters.swarm]\nmanager = "node1"\nworkers = ["node2"]\n'


def stack(*parts: str):
    """The committed document with PARTS added, loaded."""
    return loads(COMMITTED + "".join(parts))
