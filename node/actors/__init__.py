"""The node's actors. Each module holds a plain class that carries the logic
(tested without Ray) and is hosted by `node.runtime` as a Ray actor or in-process.
Arguments and results crossing an actor boundary are msgpack bytes, one call per
batch or block."""
