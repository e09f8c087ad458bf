"""The gateway: route table, proxy, balancing, health, reload, admin listener."""
