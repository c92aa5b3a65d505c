"""fla_sim: a local SFTP simulator of the social-security BATCH channel."""

__version__ = "0.1.0"
