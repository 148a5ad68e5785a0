-- Liveness is judged to the millisecond (agents beat twice a second, and a failover must
-- follow a silent host within about a second), so a host's last beat is kept in unix
-- milliseconds.
ALTER TABLE hosts RENAME COLUMN last_heartbeat TO last_beat_ms;
UPDATE hosts SET last_beat_ms = last_beat_ms * 1000 WHERE last_beat_ms IS NOT NULL;
