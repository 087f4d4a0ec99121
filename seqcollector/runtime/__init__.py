"""The imperative shell: applies the core's effects to Redis and HTTP, feeds it inputs."""
