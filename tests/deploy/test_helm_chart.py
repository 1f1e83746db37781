"""The Helm chart: `helm lint` passes, and `helm template` renders valid manifests for the
main combinations of values (checked object by object, not by eye)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from llmbus.metrics import AuditMetrics, GatewayMetrics, TopicMetrics, WorkerMetrics
from llmbus.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "llmbus"
ALERTS = CHART / "alerts" / "llmbus-alerts.yaml"


def render(helm: str, *sets: str) -> list[dict[str, Any]]:
    args = [helm, "template", "rel", str(CHART), "--namespace", "ai", "--kube-version", "1.30.0"]
    for item in sets:
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_lint_is_clean(helm: str) -> None:
    done = subprocess.run(
        [helm, "lint", "--strict", str(CHART)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_default_render_has_every_part_and_valid_workloads(helm: str) -> None:
    docs = render(helm)
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {
        "rel-llmbus-worker",
        "rel-llmbus-auditor",
        "rel-llmbus-notifier",
        "rel-llmbus-gateway",
    }
    for name, d in deployments.items():
        spec = d["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), name
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for c in pod["containers"]:
            assert ":" in c["image"] and c["image"].rsplit(":", 1)[1], f"{name}: image has no tag"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["resources"].get("requests"), f"{name}: no resource requests"
            env = {e["name"]: e for e in c.get("env", [])}
            assert env["LLMBUS_KAFKA_BOOTSTRAP"]["value"] == "kafka:9092"
            for e in env.values():  # credentials only by reference, never inline
                if "URL" in e["name"] or "PASSWORD" in e["name"]:
                    assert "valueFrom" in e and "value" not in e, e
    worker = deployments["rel-llmbus-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["args"] == ["worker"]

    assert not by_kind(docs, "Secret"), "the chart must not carry secrets by default"
    dashboard = by_kind(docs, "ConfigMap")["rel-llmbus-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["llmbus.json"])["uid"] == "llmbus-overview"
    job = next(iter(by_kind(docs, "Job").values()))
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert set(by_kind(docs, "HorizontalPodAutoscaler")) == {"rel-llmbus-worker"}
    assert not by_kind(docs, "ScaledObject")
    assert set(by_kind(docs, "PodDisruptionBudget")) == {"rel-llmbus-worker", "rel-llmbus-gateway"}
    assert "rel-llmbus-gateway" in by_kind(docs, "Service")
    assert not by_kind(docs, "Ingress") and not by_kind(docs, "ServiceMonitor")

    policies = by_kind(docs, "NetworkPolicy")
    default = policies["rel-llmbus-default"]["spec"]
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert default["ingress"] == [
        {"from": [{"namespaceSelector": monitoring}], "ports": [{"port": "metrics"}]}
    ]
    gateway = policies["rel-llmbus-gateway"]["spec"]
    assert gateway["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert gateway["ingress"][0]["ports"] == [{"port": "http"}]


def test_keda_scales_on_lag_of_both_lanes_instead_of_hpa(helm: str) -> None:
    docs = render(helm, "worker.autoscaling.keda.enabled=true", "model.name=org/My Model")
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    scaled = by_kind(docs, "ScaledObject")["rel-llmbus-worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "rel-llmbus-worker"
    topics = sorted(t["metadata"]["topic"] for t in scaled["triggers"])
    assert topics == ["llmbus.batch.org-My-Model", "llmbus.requests.org-My-Model"]
    assert {t["metadata"]["consumerGroup"] for t in scaled["triggers"]} == {
        "llmbus-worker-org/My Model"
    }
    worker = by_kind(docs, "Deployment")["rel-llmbus-worker"]["spec"]
    assert "replicas" not in worker  # the autoscaler owns the count


def test_keda_reads_lag_with_the_workers_sasl_credentials_by_reference(helm: str) -> None:
    docs = render(
        helm,
        "worker.autoscaling.keda.enabled=true",
        "kafka.securityProtocol=SASL_SSL",
        "kafka.saslMechanism=SCRAM-SHA-512",
        "kafka.existingSecret=kafka-creds",
    )
    auth = by_kind(docs, "TriggerAuthentication")["rel-llmbus-worker-kafka"]["spec"]
    assert auth["secretTargetRef"] == [
        {"parameter": "username", "name": "kafka-creds", "key": "username"},
        {"parameter": "password", "name": "kafka-creds", "key": "password"},
    ]
    scaled = by_kind(docs, "ScaledObject")["rel-llmbus-worker"]["spec"]
    for trigger in scaled["triggers"]:
        assert trigger["authenticationRef"] == {"name": "rel-llmbus-worker-kafka"}
        assert trigger["metadata"]["sasl"] == "scram_sha512"
        assert trigger["metadata"]["tls"] == "enable"
        assert "password" not in trigger["metadata"]
    plain = render(helm, "worker.autoscaling.keda.enabled=true")
    assert not by_kind(plain, "TriggerAuthentication")


def test_gpu_off_ingress_tls_and_service_monitor(helm: str) -> None:
    docs = render(
        helm,
        "worker.gpu.enabled=false",
        "gateway.ingress.enabled=true",
        "metrics.serviceMonitor.enabled=true",
        "worker.nodeSelector.gpu=h100",
    )
    worker = by_kind(docs, "Deployment")["rel-llmbus-worker"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in worker["containers"][0]["resources"].get("limits", {})
    assert worker["nodeSelector"] == {"gpu": "h100"}
    ingress = by_kind(docs, "Ingress")["rel-llmbus-gateway"]["spec"]
    assert ingress["tls"][0]["secretName"] == "llmbus-gateway-tls"
    assert by_kind(docs, "ServiceMonitor")


def env_of(deployment: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each env variable's entries in the first container (a list, so duplicates show)."""
    entries: dict[str, list[dict[str, Any]]] = {}
    for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", []):
        entries.setdefault(e["name"], []).append(e)
    return entries


def test_embedding_workers_beside_the_chat_workers(helm: str) -> None:
    plain = render(helm)
    assert "rel-llmbus-embedding-worker" not in by_kind(plain, "Deployment")
    assert "LLMBUS_GATEWAY_EMBEDDING_MODELS" not in env_of(
        by_kind(plain, "Deployment")["rel-llmbus-gateway"]
    )

    docs = render(helm, "embeddings.enabled=true")
    deployments = by_kind(docs, "Deployment")
    embedder = deployments["rel-llmbus-embedding-worker"]
    pod = embedder["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "embedding-worker"
    assert embedder["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["worker"]
    assert (
        container["image"]
        == deployments["rel-llmbus-worker"]["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    env = env_of(embedder)
    assert env["LLMBUS_MODEL"] == [{"name": "LLMBUS_MODEL", "value": "all-minilm-l6-v2"}]
    assert all(len(entries) == 1 for entries in env.values()), env
    assert env["LLMBUS_RUNNER"][0]["value"] == "auto"
    assert env["LLMBUS_SHUTDOWN_GRACE_S"][0]["value"] == "50"
    assert "LLMBUS_MODEL_PATH" not in env
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"  # the image is CUDA's
    # The chat workers keep their model.
    chat = env_of(deployments["rel-llmbus-worker"])
    assert chat["LLMBUS_MODEL"] == [{"name": "LLMBUS_MODEL", "value": "smollm2-135m-instruct"}]

    gateway = env_of(deployments["rel-llmbus-gateway"])
    assert gateway["LLMBUS_GATEWAY_EMBEDDING_MODELS"][0]["value"] == '["all-minilm-l6-v2"]'
    auditor = env_of(deployments["rel-llmbus-auditor"])
    assert auditor["LLMBUS_AUDIT_STORE_VECTORS"][0]["value"] == "false"

    # Covered like the chat workers: a disruption budget, and the release-wide policy that
    # lets only metrics scrapes in.
    budget = by_kind(docs, "PodDisruptionBudget")["rel-llmbus-embedding-worker"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    policy = by_kind(docs, "NetworkPolicy")["rel-llmbus-default"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    on_cpu = render(
        helm,
        "embeddings.enabled=true",
        "embeddings.gpu.enabled=false",
        "embeddings.path=/models/e5",
        "embeddings.runner=pooling",
        "embeddings.storeVectors=true",
    )
    embedder = by_kind(on_cpu, "Deployment")["rel-llmbus-embedding-worker"]
    limits = embedder["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits
    env = env_of(embedder)
    assert env["LLMBUS_MODEL_PATH"][0]["value"] == "/models/e5"
    assert env["LLMBUS_RUNNER"][0]["value"] == "pooling"
    auditor = env_of(by_kind(on_cpu, "Deployment")["rel-llmbus-auditor"])
    assert auditor["LLMBUS_AUDIT_STORE_VECTORS"][0]["value"] == "true"


def test_notifier_runs_beside_the_auditor_with_its_secrets(helm: str) -> None:
    docs = render(helm)
    deployments = by_kind(docs, "Deployment")
    notifier = deployments["rel-llmbus-notifier"]
    auditor = deployments["rel-llmbus-auditor"]
    assert notifier["spec"]["replicas"] == 2  # one leader by advisory lock, one on standby
    pod = notifier["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "notifier"
    assert notifier["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "llmbus",
        "app.kubernetes.io/instance": "rel",
        "app.kubernetes.io/component": "notifier",
    }
    container = pod["spec"]["containers"][0]
    auditor_container = auditor["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["notifier"]
    assert container["image"] == auditor_container["image"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100}]
    assert container["securityContext"] == auditor_container["securityContext"]
    assert pod["spec"]["securityContext"] == auditor["spec"]["template"]["spec"]["securityContext"]

    env, auditor_env = env_of(notifier), env_of(auditor)
    assert all(len(entries) == 1 for entries in env.values()), env
    assert env["LLMBUS_DATABASE_URL"] == [
        {
            "name": "LLMBUS_DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": "llmbus-database", "key": "database-url"}},
        }
    ]
    for name in (
        "LLMBUS_DATABASE_URL",
        "LLMBUS_KAFKA_BOOTSTRAP",
        "LLMBUS_TOPIC_PREFIX",
        "LLMBUS_KAFKA_SECURITY_PROTOCOL",
        "LLMBUS_METRICS_PORT",
    ):
        assert env[name] == auditor_env[name], name
    assert env["LLMBUS_NOTIFIER_POLL_S"][0]["value"] == "1"
    retry = json.loads(env["LLMBUS_WEBHOOK_RETRY_S"][0]["value"])
    assert retry == [5, 30, 120, 600, 1800, 3600, 10800, 21600]
    assert env["LLMBUS_WEBHOOK_TIMEOUT_S"][0]["value"] == "10"

    # Scraped and fenced like every llmbus pod: the release-wide metrics Service and policy.
    service = by_kind(docs, "Service")["rel-llmbus-metrics"]["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    policy = by_kind(docs, "NetworkPolicy")["rel-llmbus-default"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    # SASL credentials by reference, the same Secret as the auditor's.
    sasl = render(
        helm,
        "kafka.securityProtocol=SASL_SSL",
        "kafka.saslMechanism=SCRAM-SHA-512",
        "kafka.existingSecret=kafka-creds",
        "database.existingSecret=db-creds",
    )
    env = env_of(by_kind(sasl, "Deployment")["rel-llmbus-notifier"])
    auditor_env = env_of(by_kind(sasl, "Deployment")["rel-llmbus-auditor"])
    for name in (
        "LLMBUS_KAFKA_SASL_MECHANISM",
        "LLMBUS_KAFKA_SASL_USERNAME",
        "LLMBUS_KAFKA_SASL_PASSWORD",
        "LLMBUS_DATABASE_URL",
    ):
        assert env[name] == auditor_env[name], name
    assert env["LLMBUS_KAFKA_SASL_PASSWORD"][0]["valueFrom"]["secretKeyRef"] == {
        "name": "kafka-creds",
        "key": "password",
    }
    assert env["LLMBUS_DATABASE_URL"][0]["valueFrom"]["secretKeyRef"]["name"] == "db-creds"

    tuned = render(
        helm,
        "notifier.replicas=1",
        "notifier.webhookRetrySeconds={1,60}",
        "notifier.webhookTimeoutSeconds=3",
    )
    notifier = by_kind(tuned, "Deployment")["rel-llmbus-notifier"]
    assert notifier["spec"]["replicas"] == 1
    env = env_of(notifier)
    assert json.loads(env["LLMBUS_WEBHOOK_RETRY_S"][0]["value"]) == [1, 60]
    assert env["LLMBUS_WEBHOOK_TIMEOUT_S"][0]["value"] == "3"

    off = render(helm, "notifier.enabled=false")
    assert "rel-llmbus-notifier" not in by_kind(off, "Deployment")
    assert not [d for d in off if "notifier" in d["metadata"]["name"]]
    assert "rel-llmbus-auditor" in by_kind(off, "Deployment")


def test_audit_maintenance_cronjob_applies_retention_as_the_schema_owner(helm: str) -> None:
    docs = render(
        helm,
        "audit.retentionDays=90",
        "audit.contentRetentionDays=30",
        "audit.redaction.enabled=true",
        "audit.redaction.patterns.EMPLOYEE_ID=E[0-9]{6}",
    )
    cron = by_kind(docs, "CronJob")["rel-llmbus-audit-maintenance"]["spec"]
    assert cron["schedule"] == "17 3 * * *"
    assert cron["concurrencyPolicy"] == "Forbid"  # two runs would race on the partitions
    assert cron["startingDeadlineSeconds"] > 0
    assert cron["successfulJobsHistoryLimit"] >= 1 and cron["failedJobsHistoryLimit"] >= 1
    assert cron["jobTemplate"]["spec"]["backoffLimit"] >= 1
    pod = cron["jobTemplate"]["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "audit-maintenance"
    assert pod["spec"]["restartPolicy"] == "Never"
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["audit", "maintain"]  # the image's entrypoint is `llmbus`
    assert container["resources"].get("requests")

    # The migrations Job's image, security and owner connection; not the writer's.
    migrate = next(iter(by_kind(docs, "Job").values()))
    migrate_pod = migrate["spec"]["template"]["spec"]
    assert container["image"] == migrate_pod["containers"][0]["image"]
    assert container["securityContext"] == migrate_pod["containers"][0]["securityContext"]
    assert pod["spec"]["securityContext"] == migrate_pod["securityContext"]
    env = env_of(cron["jobTemplate"])
    assert all(len(entries) == 1 for entries in env.values()), env
    assert env["LLMBUS_MIGRATION_DATABASE_URL"] == [
        {
            "name": "LLMBUS_MIGRATION_DATABASE_URL",
            "valueFrom": {
                "secretKeyRef": {"name": "llmbus-database", "key": "migration-database-url"}
            },
        }
    ]
    assert env["LLMBUS_MIGRATION_DATABASE_URL"] == env_of(migrate)["LLMBUS_MIGRATION_DATABASE_URL"]
    assert "LLMBUS_DATABASE_URL" not in env
    assert env["LLMBUS_AUDIT_RETENTION_DAYS"][0]["value"] == "90"
    assert env["LLMBUS_AUDIT_CONTENT_RETENTION_DAYS"][0]["value"] == "30"
    assert env["LLMBUS_AUDIT_PARTITIONS_AHEAD_DAYS"][0]["value"] == "7"
    # Fenced like every llmbus pod: the release-wide policy lets only metrics scrapes in.
    policy = by_kind(docs, "NetworkPolicy")["rel-llmbus-default"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    # The auditor blanks late rows' content and makes partitions ahead; it drops nothing.
    deployments = by_kind(docs, "Deployment")
    auditor = env_of(deployments["rel-llmbus-auditor"])
    assert auditor["LLMBUS_AUDIT_CONTENT_RETENTION_DAYS"][0]["value"] == "30"
    assert auditor["LLMBUS_AUDIT_PARTITIONS_AHEAD_DAYS"][0]["value"] == "7"
    assert "LLMBUS_AUDIT_RETENTION_DAYS" not in auditor
    # Redaction in every long-running process (the trail, and everyone's log lines).
    for name, deployment in deployments.items():
        entries = env_of(deployment)
        assert entries["LLMBUS_REDACT"] == [{"name": "LLMBUS_REDACT", "value": "true"}], name
        patterns = json.loads(entries["LLMBUS_REDACT_PATTERNS"][0]["value"])
        assert patterns == {"EMPLOYEE_ID": "E[0-9]{6}"}, name

    # By default: the job still makes partitions, and null values set nothing, so the
    # application's defaults (keep everything) hold.
    plain = render(helm)
    env = env_of(by_kind(plain, "CronJob")["rel-llmbus-audit-maintenance"]["spec"]["jobTemplate"])
    assert "LLMBUS_AUDIT_RETENTION_DAYS" not in env
    assert "LLMBUS_AUDIT_CONTENT_RETENTION_DAYS" not in env
    auditor = env_of(by_kind(plain, "Deployment")["rel-llmbus-auditor"])
    assert "LLMBUS_AUDIT_CONTENT_RETENTION_DAYS" not in auditor
    assert auditor["LLMBUS_REDACT"][0]["value"] == "false"
    assert "LLMBUS_REDACT_PATTERNS" not in auditor

    off = render(helm, "audit.maintenance.enabled=false")
    assert not by_kind(off, "CronJob")
    assert not [d for d in off if "audit-maintenance" in d["metadata"]["name"]]
    assert by_kind(off, "Job"), "the migrations Job does not depend on the maintenance job"


def test_values_schema_and_required_values_refuse_bad_input(helm: str) -> None:
    cases = {
        "worker.maxNumSeqs=0": "maxNumSeqs",
        "kafka.securityProtocol=SASL_WHATEVER": "securityProtocol",
        "gateway.port=80": "port",
        "embeddings.runner=embed": "runner",
        "embeddings.replica=2": "replica",
        "notifier.replicas=-1": "/notifier/replicas",
        "notifier.webhookRetrySeconds=5": "/notifier/webhookRetrySeconds",
        "notifier.pollSeconds=0": "/notifier/pollSeconds",
        "notifier.webhookTimeout=5": "webhookTimeout",
        "audit.retentionDays=0": "/audit/retentionDays",
        "audit.contentRetentionDays=0": "/audit/contentRetentionDays",
        "audit.partitionsAheadDays=61": "/audit/partitionsAheadDays",
        "audit.redaction.enabled=yes": "/audit/redaction/enabled",
        "audit.maintenance.schedul=x": "schedul",
        "kafka.requestPartitions=0": "/kafka/requestPartitions",
        "kafka.replicationFactor=0": "/kafka/replicationFactor",
        "kafka.topicCheck=ignore": "/kafka/topicCheck",
        "kafka.strimziTopic.enabled=true": "strimziTopic",
        "monitoring.prometheusRule.label.x=y": "label",
        "kafka.minInsyncReplicas=4": "must not exceed kafka.replicationFactor",
        "worker.autoscaling.keda.enabled=true,worker.autoscaling.keda.maxReplicas=5": (
            "maxReplicas must not exceed kafka.requestPartitions"
        ),
        "kafka.strimziTopics.enabled=true": "kafka.strimziTopics.cluster is required",
        "gateway.ingress.enabled=true,gateway.ingress.tlsSecret=": "tlsSecret is required",
        "worker.autoscaling.keda.enabled=true,kafka.securityProtocol=SASL_SSL,"
        "kafka.saslMechanism=PLAIN": "kafka.existingSecret is required",
        "worker.autoscaling.keda.enabled=true,kafka.securityProtocol=SASL_PLAINTEXT,"
        "kafka.existingSecret=s": "saslMechanism must be",
    }
    for bad, why in cases.items():
        args = [helm, "template", "rel", str(CHART), "--kube-version", "1.30.0", "--set", bad]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        assert done.returncode != 0, bad
        assert why in done.stderr, (bad, done.stderr[-2000:])


def settings_topics(prefix: str, models: list[str], request: int, reply: int) -> dict[str, int]:
    """What llmbus itself creates and checks for these models: ``Settings.topics()``."""
    topics: dict[str, int] = {}
    for model in models:
        settings = Settings(
            topic_prefix=prefix, model=model, request_partitions=request, reply_partitions=reply
        )
        topics |= settings.topics()
    return topics


def test_strimzi_kafka_topics_are_the_topics_llmbus_uses(helm: str) -> None:
    assert not by_kind(render(helm), "KafkaTopic")  # off by default

    # The defaults: the chart's values are the application's.
    fields = Settings.model_fields
    request, reply = fields["request_partitions"].default, fields["reply_partitions"].default
    docs = render(helm, "kafka.strimziTopics.enabled=true", "kafka.strimziTopics.cluster=main")
    topics = by_kind(docs, "KafkaTopic")
    got = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in topics.values()}
    assert got == settings_topics("llmbus", [fields["model"].default], request, reply)
    for name, topic in topics.items():
        assert "namespace" not in topic["metadata"], name  # the release's
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "main"
        # Deleting a KafkaTopic deletes its records: an uninstall must not.
        assert topic["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert topic["spec"]["replicas"] == 3
        assert topic["spec"]["config"]["min.insync.replicas"] == 2
        retention = topic["spec"]["config"].get("retention.ms")
        assert retention == (604_800_000 if name == "llmbus.dead-letter" else None), name

    # Two models, one with capitals, "_" and "." in its name; every count changed.
    models = ["Org/My_Model.v2", "all-minilm-l6-v2"]
    docs = render(
        helm,
        "kafka.strimziTopics.enabled=true",
        "kafka.strimziTopics.cluster=kafka-prod",
        "kafka.strimziTopics.namespace=kafka",
        "kafka.topicPrefix=acme_llm",
        f"model.name={models[0]}",
        "embeddings.enabled=true",
        "kafka.requestPartitions=12",
        "kafka.replyPartitions=48",
        "kafka.replicationFactor=5",
        "kafka.minInsyncReplicas=3",
        "kafka.deadLetterRetentionMs=86400000",
    )
    expected = settings_topics("acme_llm", models, 12, 48)
    assert "acme_llm.requests.Org-My_Model-v2" in expected
    topics = by_kind(docs, "KafkaTopic")
    assert len(topics) == len(expected)  # no two topics share a resource
    assert {t["spec"]["topicName"]: t["spec"]["partitions"] for t in topics.values()} == expected
    dns_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
    for name, topic in topics.items():
        assert dns_1123.fullmatch(name) and len(name) <= 253, name
        assert topic["metadata"]["namespace"] == "kafka"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "kafka-prod"
        assert topic["spec"]["replicas"] == 5
        assert topic["spec"]["config"]["min.insync.replicas"] == 3
        dead_letter = topic["spec"]["topicName"] == "acme_llm.dead-letter"
        assert topic["spec"]["config"].get("retention.ms") == (86_400_000 if dead_letter else None)


def test_topic_settings_reach_every_process_that_checks_topics(helm: str) -> None:
    docs = render(
        helm,
        "embeddings.enabled=true",
        "kafka.requestPartitions=12",
        "kafka.replyPartitions=48",
        "kafka.replicationFactor=5",
        "kafka.minInsyncReplicas=3",
        "kafka.topicCheck=refuse",
    )
    wanted = {
        "LLMBUS_REQUEST_PARTITIONS": "12",
        "LLMBUS_REPLY_PARTITIONS": "48",
        "LLMBUS_TOPIC_REPLICATION_FACTOR": "5",
        "LLMBUS_TOPIC_MIN_INSYNC_REPLICAS": "3",
        "LLMBUS_TOPIC_CHECK": "refuse",
    }
    for name in wanted:  # each one a setting the application reads
        assert name.removeprefix("LLMBUS_").lower() in Settings.model_fields, name
    deployments = by_kind(docs, "Deployment")
    for name in ("worker", "embedding-worker", "auditor", "gateway"):
        env = env_of(deployments[f"rel-llmbus-{name}"])
        got = {k: [e["value"] for e in env[k]] for k in wanted if k in env}
        assert got == {k: [v] for k, v in wanted.items()}, name

    defaults = env_of(by_kind(render(helm), "Deployment")["rel-llmbus-worker"])
    fields = Settings.model_fields
    assert defaults["LLMBUS_REQUEST_PARTITIONS"][0]["value"] == str(
        fields["request_partitions"].default
    )
    assert defaults["LLMBUS_REPLY_PARTITIONS"][0]["value"] == str(
        fields["reply_partitions"].default
    )
    assert defaults["LLMBUS_TOPIC_REPLICATION_FACTOR"][0]["value"] == "3"
    assert defaults["LLMBUS_TOPIC_MIN_INSYNC_REPLICAS"][0]["value"] == "2"
    assert defaults["LLMBUS_TOPIC_CHECK"][0]["value"] == "warn"


def exported_llmbus_metrics() -> set[str]:
    registry = CollectorRegistry()
    for metrics in (WorkerMetrics, AuditMetrics, GatewayMetrics, TopicMetrics):
        metrics(registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def test_prometheus_rule_ships_the_alert_file(helm: str) -> None:
    assert not by_kind(render(helm), "PrometheusRule")  # off by default

    docs = render(
        helm,
        "monitoring.prometheusRule.enabled=true",
        "monitoring.prometheusRule.labels.release=kube-prometheus-stack",
        "embeddings.enabled=true",
    )
    rule = by_kind(docs, "PrometheusRule")["rel-llmbus"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # ruleSelector
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel"
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    assert rule["spec"] == {"groups": groups}

    alerts = {r["alert"]: r for g in groups for r in g["rules"]}
    assert set(alerts) == {
        "LlmbusConsumerLagGrowing",
        "LlmbusDeadLetters",
        "LlmbusAuditBacklog",
        "LlmbusEngineRestarts",
        "LlmbusTopicUnderReplicated",
        "LlmbusTopicOffline",
    }
    for name, alert in alerts.items():
        assert re.fullmatch(r"\d+[smh]", alert["for"]), name
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        assert alert["annotations"]["summary"], name
        assert "docs/operations.md" in alert["annotations"]["description"], name
    assert alerts["LlmbusTopicOffline"]["labels"]["severity"] == "critical"
    # Every llmbus metric an alert reads is one the code exports.
    read = {m for a in alerts.values() for m in re.findall(r"\bllmbus_\w+", a["expr"])}
    assert read and read <= exported_llmbus_metrics(), read - exported_llmbus_metrics()

    # The restart alert matches the chart's worker containers, chat and embedding, by the
    # container's name and the pod's (a Deployment's pod: <deployment>-<hash>-<id>).
    restarts = alerts["LlmbusEngineRestarts"]["expr"]
    container = re.search(r'container="([^"]+)"', restarts)
    pod = re.search(r'pod=~"([^"]+)"', restarts)
    assert container and pod
    deployments = by_kind(docs, "Deployment")
    for name in ("rel-llmbus-worker", "rel-llmbus-embedding-worker"):
        spec = deployments[name]["spec"]["template"]["spec"]
        assert [c["name"] for c in spec["containers"]] == [container[1]], name
        assert re.fullmatch(pod[1], f"{name}-7d9f8b6c5d-x2x4z"), name
    for name in ("rel-llmbus-auditor", "rel-llmbus-gateway", "rel-llmbus-notifier"):
        assert not re.fullmatch(pod[1], f"{name}-7d9f8b6c5d-x2x4z"), name
