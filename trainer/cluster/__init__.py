"""The Kubernetes API, best effort from the pod (Events on the job) and from a workstation (`status`)."""
