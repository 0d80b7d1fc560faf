"""The runtime test's scenarios, one module per concern; `tests.e2e.stack.PLAN` orders them.

- `workloads`: what `pulumi up` brings up, in order, and a migration that fails;
- `data_path`: the API, uploads, their storage and queue, the admin dashboard;
- `capacity`: a burst of uploads against the connection budget, resources and limits;
- `probes`: Services that follow readiness, outages, a frozen worker;
- `signals`: PID 1, stopping with uploads in flight, idle exits;
- `security`: users, files, passwords, admission and images, secrets in logs;
- `image`: the traced /app holds what every process loads; time to Ready.
"""
