"""x402 bundler on Kubernetes: validated settings in, components out, outputs exported.

The dependency graph is the deployment order: the migration Job waits for the image and the
data services; the three Deployments wait for the Job. Each component takes only its own
settings section and the stack identity.
"""

import pulumi

from components.app_config import AppConfiguration, AppConfigurationArgs
from components.data import DataServices, DataServicesArgs
from components.github import GithubDelivery, GithubDeliveryArgs
from components.image import BundlerImage, BundlerImageArgs
from components.ingress import ApiExposure, ApiExposureArgs
from components.migration import MigrationJob, MigrationJobArgs
from components.names import MIGRATION
from components.namespace import BundlerNamespace, BundlerNamespaceArgs
from components.network import NetworkPolicies, NetworkPoliciesArgs
from components.package_check import GhcrPackage, GhcrPackageArgs
from components.probes import ProbeScript, ProbeScriptArgs
from components.process_env import pod_environment
from components.registry_check import PromotedDigest, PromotedDigestArgs
from components.settings import load_settings
from components.workload import BundlerProcess, BundlerProcessArgs, process_specs

settings = load_settings()
stack, processes_settings = settings.stack, settings.processes

namespace = BundlerNamespace("namespace", BundlerNamespaceArgs(stack=stack, protect=settings.data.protect))
image = BundlerImage("image", BundlerImageArgs(image=settings.image))
image_ref = image.ref
image_checks: list[pulumi.Resource] = []
if image.promoted_from is not None:
    # A digest this stack did not push is looked up in the registry before anything runs it.
    promoted = PromotedDigest(
        "promoted-digest",
        PromotedDigestArgs(image=settings.image, image_ref=image.ref, source=image.promoted_from),
        pulumi.ResourceOptions(depends_on=[image]),
    )
    image_ref, image_checks = promoted.image_ref, [promoted]
# The checks read the registry through provider functions, which are no resources: the explicit
# dependencies put them in the graph and the preview where they already stand in the data flow.
package = GhcrPackage(
    "ghcr-package", GhcrPackageArgs(image=settings.image, github_token=settings.github.token, image_ref=image_ref),
    pulumi.ResourceOptions(depends_on=[image, *image_checks]),
)
if settings.github.delivery:
    GithubDelivery("github", GithubDeliveryArgs(github=settings.github, image_repository=settings.image.repository))

data = DataServices("data", DataServicesArgs(stack=stack, data=settings.data, namespace=namespace.name))
app_config = AppConfiguration(
    "app",
    AppConfigurationArgs(
        stack=stack, app=settings.app, postgres=settings.data.postgres, image=settings.image,
        admin_port=processes_settings.admin_port, namespace=namespace.name, endpoints=data.endpoints,
    ),
)
probes = ProbeScript("probes", ProbeScriptArgs(stack=stack, namespace=namespace.name))
# Workloads take the image through the package check: a package declared public but found
# private stops the rollout here, not in ImagePullBackOff.
migration = MigrationJob(
    "migration",
    MigrationJobArgs(
        stack=stack, migration=processes_settings.migration, namespace=namespace.name, image=package.image_ref,
        pod=pod_environment(app_config, probes, MIGRATION), wait_for=[data, package, *image_checks],
    ),
)
processes = {
    spec.component: BundlerProcess(
        spec.component,
        BundlerProcessArgs(
            stack=stack, namespace=namespace.name, image=package.image_ref,
            pod=pod_environment(app_config, probes, spec.component), spec=spec,
            wait_for=[migration, *image_checks],
        ),
    )
    for spec in process_specs(processes_settings)
}
api, admin = processes["api"], processes["admin"]
exposure = ApiExposure(
    "api-exposure",
    ApiExposureArgs(
        stack=stack, exposure=settings.exposure, public_url=settings.app.public_url, namespace=namespace.name,
        service=api,
    ),
)
NetworkPolicies(
    "network",
    NetworkPoliciesArgs(
        stack=stack, exposure=settings.exposure, data=settings.data, api_port=processes_settings.api_port,
        admin_port=processes_settings.admin_port, namespace=namespace.name,
    ),
)

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
pulumi.export("adminUsername", settings.app.admin_username)
pulumi.export("adminPassword", app_config.admin_password)
