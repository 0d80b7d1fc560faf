"""Every wait of the runtime test, named once, with why it is as long as it is.

A wait that gives up says what it waited for (`Cluster.wait` callers name it in their line). A
bound that a scenario checks is printed with its margin (bound minus what was observed), so a
run that passes narrowly shows it.
"""

from __future__ import annotations

# `pulumi up` of a whole stack: image-free cold starts of PostgreSQL, MinIO and three Node
# processes that each load ~1 GB of node_modules, under their CPU quotas, three stacks at once.
APPLY = 420.0
# A probe loop starts each probe one period after the previous one started; on a loaded 2-core
# machine (three stacks, each with its own node processes) the loop's thread wakes late by up
# to this much. Added to every bound derived from probe settings, and stated in the line.
PROBE_SCHEDULING_SLACK = 3.0
# How long a terminating pod stays in its Services' endpoints after its deletion: the time
# kube-proxy needs to see the endpoint go (a real cluster takes about 1-2 s); preStop covers it.
ENDPOINT_REMOVAL_DELAY = 2.0
# How often the endpoints controller looks at pod readiness (kube-proxy reacts to watch events).
ENDPOINTS_SYNC = 0.2
# The kubelet's eviction manager measures emptyDir usage on this period (its housekeeping).
EVICTION_PERIOD = 10.0
# After a kill, how long the runner waits for the sandbox to be reaped before it reports it stuck.
REAP = 10.0
# Back to Ready after an outage ends: one readiness period to notice, plus the app's own
# reconnect backoff (ioredis and pg retry within seconds), plus slack.
RECOVERY = 90.0
# A single client request (upload, GET) through a Service.
REQUEST = 120.0
