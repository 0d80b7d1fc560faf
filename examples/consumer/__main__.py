"""A smoke test another team runs against an x402-bundler stack, from its own namespace.

Reads the bundler's outputs (the contract in the bundler's docs/outputs.md) through a
StackReference: the API's in-cluster URL and namespace go into a ConfigMap, the admin password,
a secret output, only into a Secret. A Job then calls the API's /health and the admin's
/admin/stats with those.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

config = pulumi.Config()
bundler = pulumi.StackReference(config.require("bundlerStack"))
namespace_name = config.get("namespace") or "bundler-consumer"

# require_output: a renamed or missing output fails this program at preview, not the Job at run time.
api_url = bundler.require_output("apiInternalUrl")
admin_url = bundler.require_output("adminInternalUrl")
bundler_namespace = bundler.require_output("namespace")
admin_username = bundler.require_output("adminUsername")
# Stays a secret Output through the StackReference: it may go only where secrets go.
admin_password = bundler.require_output("adminPassword")

labels = {"app.kubernetes.io/name": "bundler-consumer", "app.kubernetes.io/managed-by": "pulumi"}
namespace = k8s.core.v1.Namespace(
    "namespace", metadata=k8s.meta.v1.ObjectMetaArgs(name=namespace_name, labels=labels)
)
endpoints = k8s.core.v1.ConfigMap(
    "bundler-endpoints",
    metadata=k8s.meta.v1.ObjectMetaArgs(namespace=namespace.metadata.name, labels=labels),
    data={"BUNDLER_API_URL": api_url, "BUNDLER_ADMIN_URL": admin_url, "BUNDLER_NAMESPACE": bundler_namespace},
)
admin = k8s.core.v1.Secret(
    "bundler-admin",
    metadata=k8s.meta.v1.ObjectMetaArgs(namespace=namespace.metadata.name, labels=labels),
    string_data={"ADMIN_USERNAME": admin_username, "ADMIN_PASSWORD": admin_password},
)
smoke = k8s.batch.v1.Job(
    "bundler-smoke",
    metadata=k8s.meta.v1.ObjectMetaArgs(namespace=namespace.metadata.name, labels=labels),
    spec=k8s.batch.v1.JobSpecArgs(
        backoff_limit=2,
        active_deadline_seconds=120,
        template=k8s.core.v1.PodTemplateSpecArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
            spec=k8s.core.v1.PodSpecArgs(
                restart_policy="Never",
                containers=[
                    k8s.core.v1.ContainerArgs(
                        name="smoke",
                        # Pinned by digest: what runs is what was reviewed.
                        image="docker.io/curlimages/curl:8.11.1@sha256:"
                        "c1fe1679c34d9784c1b0d1e5f62ac0a79fca01fb6377cdd33e90473c6f9f9a69",
                        # The password reaches curl as a config file on stdin (`-K -`), written by the
                        # shell's printf builtin: it is on no command line (`-u` would put it in
                        # /proc/<pid>/cmdline). sed escapes " and \ for curl's quoted value.
                        command=["sh", "-c", (
                            'curl -fsS "$BUNDLER_API_URL/health" && '
                            '{ printf \'user = "\'; printf \'%s:%s\' "$ADMIN_USERNAME" "$ADMIN_PASSWORD" '
                            '| sed \'s/[\\\\"]/\\\\&/g\'; printf \'"\\n\'; } '
                            '| curl -fsS -o /dev/null -K - "$BUNDLER_ADMIN_URL/admin/stats"'
                        )],
                        env_from=[
                            k8s.core.v1.EnvFromSourceArgs(
                                config_map_ref=k8s.core.v1.ConfigMapEnvSourceArgs(name=endpoints.metadata.name)
                            ),
                            k8s.core.v1.EnvFromSourceArgs(
                                secret_ref=k8s.core.v1.SecretEnvSourceArgs(name=admin.metadata.name)
                            ),
                        ],
                    )
                ],
            ),
        ),
    ),
)

pulumi.export("bundlerApiUrl", api_url)
pulumi.export("smokeJobName", smoke.metadata.name)
# For a CI step that calls the admin through a port-forward (`curl -u "$(pulumi stack output
# --show-secrets adminBasicAuth)"`): derived from a secret, so exported as one.
pulumi.export("adminBasicAuth", pulumi.Output.concat(admin_username, ":", admin_password))
