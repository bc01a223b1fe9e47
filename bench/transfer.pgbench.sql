-- Row-lock transfer, the PostgreSQL pattern of the seed systems. Rows are
-- locked in id order so concurrent transfers cannot deadlock.
\set a random(1, :accounts)
\set b random(1, :accounts)
BEGIN;
UPDATE bench_accounts SET balance = balance - 1 WHERE id = least(:a, :b) AND balance >= 1;
UPDATE bench_accounts SET balance = balance + 1 WHERE id = greatest(:a, :b);
COMMIT;
