-- A message id is unique per topic, not across the outbox, and publishing an id the topic
-- already holds is a no-op (bus_publish.sql: ON CONFLICT DO NOTHING). The relay publishes
-- at least once: after a takeover it re-publishes the page its predecessor published but
-- did not checkpoint, and one event may be relayed to several topics.
ALTER TABLE __SCHEMA__.outbox DROP CONSTRAINT outbox_id_key;
ALTER TABLE __SCHEMA__.outbox ADD CONSTRAINT outbox_topic_id_key UNIQUE (topic, id);
