"""Sessions on hosts (local and SSH) and the DUT API built on them."""
