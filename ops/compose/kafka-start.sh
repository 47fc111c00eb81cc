#!/bin/bash
# The broker of docker-compose.yml, configured as `ledgerstream stack up` configures its own:
# SASL/SCRAM-SHA-512 for clients and between brokers, SASL/PLAIN on the KRaft controller
# listener (which cannot use SCRAM), the StandardAuthorizer, and no access without an ACL.
# The operator (a super user) gets its SCRAM credential when the storage is formatted.
set -euo pipefail
: "${KAFKA_ADMIN_PASSWORD:?set KAFKA_ADMIN_PASSWORD}"
CONFIG=/tmp/ledgerstream-server.properties
SCRAM="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"${KAFKA_ADMIN_PASSWORD}\";"
PLAIN="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"${KAFKA_ADMIN_PASSWORD}\" user_admin=\"${KAFKA_ADMIN_PASSWORD}\";"
umask 077
cat > "$CONFIG" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@kafka:19093
listeners=HOST://0.0.0.0:19092,INTERNAL://kafka:29092,CONTROLLER://kafka:19093
advertised.listeners=HOST://127.0.0.1:19092,INTERNAL://kafka:29092
listener.security.protocol.map=HOST:SASL_PLAINTEXT,INTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.name.host.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.internal.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.controller.sasl.enabled.mechanisms=PLAIN
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.host.scram-sha-512.sasl.jaas.config=${SCRAM}
listener.name.internal.scram-sha-512.sasl.jaas.config=${SCRAM}
listener.name.controller.plain.sasl.jaas.config=${PLAIN}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
allow.everyone.if.no.acl.found=false
log.dirs=/tmp/kraft-combined-logs
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
cat > /tmp/ledgerstream-admin.properties <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=${SCRAM}
PROPS
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted -t "${CLUSTER_ID}" -c "$CONFIG" \
  --add-scram "SCRAM-SHA-512=[name=admin,password=${KAFKA_ADMIN_PASSWORD}]"
exec /opt/kafka/bin/kafka-server-start.sh "$CONFIG"
