"""The `minibuild` command line: docker's build and image commands, and the daemon (docker cli/)."""
