"""blacklist_cli: the operator's command line for the ses-relay blacklist (`main.main`)."""
