"""How the API is reached from outside and scraped: optional Ingress and ServiceMonitor.

The admin dashboard is never exposed here; it stays a ClusterIP Service behind the
NetworkPolicies (reach it with `kubectl port-forward`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.names import API, k8s_name, labels, selector_labels
from components.settings.exposure import ExposureSettings
from components.settings.stack import StackIdentity
from components.workload import METRICS_PATH, BundlerProcess


@dataclass(frozen=True)
class ApiExposureArgs:
    stack: StackIdentity
    """Stack name and app version, for labels."""
    exposure: ExposureSettings
    """The Ingress and ServiceMonitor settings."""
    public_url: str
    """The API's public URL, exported as is."""
    namespace: pulumi.Input[str]
    """Namespace of the API."""
    service: BundlerProcess
    """The API process, whose Service is exposed."""


class ApiExposure(pulumi.ComponentResource):
    public_url: pulumi.Output[str]

    def __init__(self, name: str, args: ApiExposureArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:ApiExposure", name, None, opts)
        s, api = args.exposure, args.service
        child = pulumi.ResourceOptions(parent=self)
        meta_labels = labels(args.stack.stack, API, args.stack.app_version)
        if api.service_name is None or api.port is None:
            raise ValueError("ApiExposure needs a process with a Service")

        if s.ingress.enabled:
            annotations = {
                # Uploads are up to 10 GiB and may take the full 10-minute request timeout:
                # no body size cap, no buffering to the controller's disk, matching timeouts.
                "nginx.ingress.kubernetes.io/proxy-body-size": "0",
                "nginx.ingress.kubernetes.io/proxy-request-buffering": "off",
                "nginx.ingress.kubernetes.io/proxy-read-timeout": "620",
                "nginx.ingress.kubernetes.io/proxy-send-timeout": "620",
            }
            if s.ingress.cluster_issuer:
                annotations["cert-manager.io/cluster-issuer"] = s.ingress.cluster_issuer
            # cert-manager writes the certificate into a Secret named here when none is given.
            issued = k8s_name(str(s.ingress.host).replace(".", "-"), "tls") if s.ingress.cluster_issuer else None
            tls_secret = s.ingress.tls_secret or issued
            k8s.networking.v1.Ingress(
                f"{name}-ingress",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=k8s_name("bundler", API), namespace=args.namespace, labels=meta_labels, annotations=annotations
                ),
                spec=k8s.networking.v1.IngressSpecArgs(
                    ingress_class_name=s.ingress.class_name,
                    tls=[k8s.networking.v1.IngressTLSArgs(hosts=[str(s.ingress.host)], secret_name=tls_secret)]
                    if tls_secret
                    else None,
                    rules=[
                        k8s.networking.v1.IngressRuleArgs(
                            host=s.ingress.host,
                            http=k8s.networking.v1.HTTPIngressRuleValueArgs(
                                paths=[
                                    k8s.networking.v1.HTTPIngressPathArgs(
                                        path="/",
                                        path_type="Prefix",
                                        backend=k8s.networking.v1.IngressBackendArgs(
                                            service=k8s.networking.v1.IngressServiceBackendArgs(
                                                name=api.service_name,
                                                port=k8s.networking.v1.ServiceBackendPortArgs(name="http"),
                                            )
                                        ),
                                    )
                                ]
                            ),
                        )
                    ],
                ),
                opts=child,
            )

        if s.service_monitor:
            k8s.apiextensions.CustomResource(
                f"{name}-service-monitor",
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=k8s_name("bundler", API), namespace=args.namespace, labels=meta_labels
                ),
                spec={
                    "selector": {"matchLabels": selector_labels(args.stack.stack, API)},
                    "endpoints": [{"port": "http", "path": METRICS_PATH, "interval": "30s"}],
                },
                opts=child,
            )

        self.public_url = pulumi.Output.from_input(args.public_url)
        self.register_outputs({"public_url": self.public_url})
