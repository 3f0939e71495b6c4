"""daemonpool operator: reconciles DaemonPools into Deployments."""
