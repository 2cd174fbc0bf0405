-- as a superuser, on a fresh cluster (see REVIEW.md "Set-up")
CREATE EXTENSION IF NOT EXISTS event_patterns;
CREATE ROLE eve LOGIN;          -- the attacker: no SUPERUSER, no CREATEROLE
CREATE ROLE alice LOGIN;        -- the victim service
CREATE SCHEMA eve AUTHORIZATION eve;
CREATE SCHEMA alice AUTHORIZATION alice;
ALTER ROLE eve SET search_path = eve, public;
ALTER ROLE alice SET search_path = alice, public;
