-- The row-lock transfer of transfer.pgbench.sql, plus what the other peers
-- do: a record of the transfer under a unique id in the same transaction,
-- so a retried request fails on the key instead of moving money twice.
-- Ids are random 63-bit numbers: a collision in a run is negligible.
\set a random(1, :accounts)
\set b random(1, :accounts)
\set id random(1, 9223372036854775806)
BEGIN;
INSERT INTO bench_transfers (id, from_id, to_id, amount) VALUES (:id, least(:a, :b), greatest(:a, :b), 1);
UPDATE bench_accounts SET balance = balance - 1 WHERE id = least(:a, :b) AND balance >= 1;
UPDATE bench_accounts SET balance = balance + 1 WHERE id = greatest(:a, :b);
COMMIT;
