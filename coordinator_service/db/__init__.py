"""All of the coordinator's SQL: one repository per table group, each over one connection."""
