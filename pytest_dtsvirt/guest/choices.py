"""What a test guest build can be asked for (no other import: the build and the package's
front both use it)."""

#: SSH servers the test guest can carry; the first, the default, reaches SSH sooner
SSH_SERVERS = ("dropbear", "openssh")
DEFAULT_SSH = SSH_SERVERS[0]
