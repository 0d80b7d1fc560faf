"""The stack's namespace, with the restricted Pod Security Standard enforced by the cluster.

Enforcing `restricted` at admission means a pod that slipped past our own checks is refused
by Kubernetes instead of running privileged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.names import labels, name_of
from components.settings.stack import StackIdentity


@dataclass(frozen=True)
class BundlerNamespaceArgs:
    stack: StackIdentity
    """Stack name, namespace name and app version."""
    protect: bool
    """Kept on `pulumi destroy` with the data (`protectData`)."""


class BundlerNamespace(pulumi.ComponentResource):
    name: pulumi.Output[str]

    def __init__(self, name: str, args: BundlerNamespaceArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:BundlerNamespace", name, None, opts)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.stack.namespace,
                labels={
                    **labels(args.stack.stack, "namespace", args.stack.app_version),
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            ),
            # Deleting a namespace deletes its PersistentVolumeClaims: protect it with the data.
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        self.name = name_of(namespace)
        self.register_outputs({"name": self.name})
