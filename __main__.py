"""x402 bundler on Kubernetes: validated settings in, components out, outputs exported.

The dependency graph is the deployment order: the migration Job waits for the image and the
data services; the three Deployments wait for the Job.
"""

import pulumi

from components.config import load_settings
from components.data import DataServices, DataServicesArgs
from components.github import GithubDelivery, GithubDeliveryArgs
from components.image import BundlerImage, BundlerImageArgs
from components.ingress import ApiExposure, ApiExposureArgs
from components.labels import MIGRATION
from components.migration import MigrationJob, MigrationJobArgs
from components.namespace import BundlerNamespace, BundlerNamespaceArgs
from components.network import NetworkPolicies, NetworkPoliciesArgs
from components.probes import ProbeScript, ProbeScriptArgs
from components.registry import GhcrPackage, GhcrPackageArgs
from components.secrets import AppConfiguration, AppConfigurationArgs
from components.workload import BundlerProcess, BundlerProcessArgs, process_specs

settings = load_settings()

namespace = BundlerNamespace("namespace", BundlerNamespaceArgs(settings=settings))
image = BundlerImage("image", BundlerImageArgs(settings=settings))
package = GhcrPackage("ghcr-package", GhcrPackageArgs(settings=settings, image_ref=image.ref))
if settings.github.delivery:
    GithubDelivery("github", GithubDeliveryArgs(settings=settings))

data = DataServices("data", DataServicesArgs(settings=settings, namespace=namespace.name))
app_config = AppConfiguration(
    "app", AppConfigurationArgs(settings=settings, namespace=namespace.name, endpoints=data.endpoints)
)
probes = ProbeScript("probes", ProbeScriptArgs(settings=settings, namespace=namespace.name))
# Workloads take the image through the package check: a package declared public but found
# private stops the rollout here, not in ImagePullBackOff.

migration = MigrationJob(
    "migration",
    MigrationJobArgs(
        settings=settings, namespace=namespace.name, image=package.image_ref,
        pod=app_config.pod_environment(probes, MIGRATION), wait_for=[data],
    ),
)
processes = {
    spec.component: BundlerProcess(
        spec.component,
        BundlerProcessArgs(
            settings=settings, namespace=namespace.name, image=package.image_ref,
            pod=app_config.pod_environment(probes, spec.component), spec=spec, wait_for=[migration],
        ),
    )
    for spec in process_specs(settings)
}
api, admin = processes["api"], processes["admin"]
exposure = ApiExposure("api-exposure", ApiExposureArgs(settings=settings, namespace=namespace.name, service=api))
NetworkPolicies("network", NetworkPoliciesArgs(settings=settings, namespace=namespace.name))

pulumi.export("namespace", namespace.name)
pulumi.export("imageRef", image.ref)
pulumi.export("imagePackageUrl", package.package_url)
pulumi.export("imagePackageVisibility", package.visibility)
pulumi.export("apiServiceName", api.service_name)
pulumi.export("apiInternalUrl", api.internal_url)
pulumi.export("publicUrl", exposure.public_url)
pulumi.export("adminServiceName", admin.service_name)
pulumi.export("adminInternalUrl", admin.internal_url)
pulumi.export("migrationJobName", migration.job_name)
pulumi.export("dataMode", settings.data.mode)
pulumi.export("secretNames", app_config.secret_names)
pulumi.export("adminUsername", settings.admin_username)
pulumi.export("adminPassword", app_config.admin_password)
