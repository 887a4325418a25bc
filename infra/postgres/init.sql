-- One database per service: each service's event store is its own.
CREATE DATABASE dsi_enrollment;
CREATE DATABASE dsi_submissions;
CREATE DATABASE dsi_milestones;
CREATE DATABASE dsi_payments;
CREATE DATABASE dsi_qip_share;
CREATE DATABASE dsi_console;
