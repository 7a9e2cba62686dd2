//! The one behavioural truth for every resq backend. Each [`resq_core::Backend`]
//! (memory, Redis, Postgres) must behave exactly like a Resque Redis store:
//! the same FIFO queues, delayed buckets, failed list, worker registry,
//! counters and locks, with payload bytes kept byte for byte and each
//! operation atomic. This crate holds those expectations once, as plain
//! `pub async fn <test>(backend: Arc<dyn Backend>)` functions grouped by
//! concern: the backend contract itself (`queue`, `delayed`,
//! `precise_delayed` for due times in milliseconds, `lock`,
//! `failed`, `registry`, `stats`, `leader`, plus a proptest state machine,
//! `model`, that checks a backend against a pure-Rust reference model), the
//! engine running on it (`engine`, `client`, `worker`, `scheduler`), the
//! task layer (`plugin`, `tasks`, `cron`), and the administration API of
//! `resq-admin` (`admin_overview`, `admin_queue`, `admin_delayed`,
//! `admin_failed`, `admin_workers`, `admin_locks`, `admin_pause`,
//! `admin_enqueue`, and `admin_claims` for the enqueue times claims carry),
//! and flow control (`flow`: rate limits and concurrency caps per queue;
//! `task_flow`: the same per task, declared on the task;
//! `precise_delayed`: delayed jobs by the millisecond; `timeout` for job
//! timeouts; `cancel` and `admin_cancel` for cancelling running, queued and
//! delayed jobs).
//! To run a backend through it, invoke [`suite!`] once in an integration
//! test with a factory that returns a fresh, isolated backend (or
//! `Err(reason)` when its server is unreachable, which skips the tests
//! unless `RESQ_REQUIRE_BACKENDS=1`):
//!
//! ```text
//! resq_conformance::suite!(memory, || async {
//!     Ok::<_, String>(std::sync::Arc::new(resq_memory::MemoryBackend::new())
//!         as std::sync::Arc<dyn resq_core::Backend>)
//! });
//! ```
//!
//! Every test then appears as `<backend>::<group>::<test>`, for example
//! `memory::queue::fifo_within_queue`, and can be run alone with
//! `cargo test -p resq-conformance -- memory::queue::fifo_within_queue`.

#![warn(missing_docs)]

pub mod admin_cancel;
pub mod admin_claims;
pub mod admin_delayed;
pub mod admin_enqueue;
pub mod admin_failed;
pub mod admin_locks;
pub mod admin_overview;
pub mod admin_pause;
pub mod admin_queue;
pub mod admin_workers;
pub mod cancel;
pub mod client;
pub mod counting;
pub mod cron;
pub mod defaults;
pub mod delayed;
pub mod engine;
pub mod errors;
pub mod failed;
pub mod faults;
pub mod fixtures;
pub mod flow;
pub mod leader;
pub mod lock;
pub mod model;
pub mod outage;
pub mod pause;
pub mod plugin;
pub mod precise_delayed;
pub mod queue;
pub mod registry;
pub mod scheduler;
pub mod stats;
pub mod support;
pub mod task_flow;
pub mod tasks;
pub mod timeout;
pub mod worker;

#[doc(hidden)]
pub use resq_core;

use resq_core::Backend;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long one backend-level test may run before it is failed as hung.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment variable that turns "backend unreachable" from a skip
/// into a failure (set it in CI where the servers must be up).
pub const REQUIRE_BACKENDS_ENV: &str = "RESQ_REQUIRE_BACKENDS";

/// Generates the whole conformance suite for one backend.
///
/// `suite!(name, factory)` expands to `pub mod name { … }` with one module
/// per group and one `#[test]` per conformance test, so each test's path is
/// `name::group::test`. `factory` is a closure `|| async { … }` returning
/// `Result<Arc<dyn Backend>, String>`; it is called once per test (once per
/// proptest case for the model), and each call must give a fresh, empty,
/// isolated backend. `Err(reason)` means the backend's server is
/// unreachable: the test prints `SKIP <path>: <reason>` and passes, unless
/// `RESQ_REQUIRE_BACKENDS=1`, which makes it fail. Names used in the factory
/// resolve as at the invocation site.
///
/// The factory is called once per test and once per model case, so it
/// should be cheap (a unique key prefix or a truncate, not a new server).
///
/// To add a test, write `pub async fn my_test(backend: Arc<dyn Backend>)` in
/// `src/<group>.rs` and add `my_test` to that group's list below (a new
/// group also needs `pub mod` here and an entry in `GROUP_SOURCES`); the
/// suite's `suite_lists_every_test` fails for a test left out of the lists.
#[macro_export]
macro_rules! suite {
    ($backend:ident, $factory:expr $(,)?) => {
        $crate::__suite_impl! {
            $backend, $factory;
            async queue: [
                fifo_within_queue,
                priority_order_across_queues,
                claim_records_working_on,
                claim_on_empty_queues_returns_none_and_records_nothing,
                complete_success_counts_processed,
                complete_failure_counts_and_appends_entry,
                complete_discard_touches_no_counters,
                push_batch_keeps_order_across_queues,
                queue_len_and_range_lrange_semantics,
                remove_from_queue_lrem_count_semantics,
                delete_queue_removes_jobs_and_name,
                queues_lists_sorted_names,
                payload_bytes_are_preserved,
                concurrent_claims_never_duplicate,
                wait_for_jobs_wakes_on_push,
                wait_for_jobs_wakes_on_every_enqueue_path,
                wait_for_jobs_returns_by_timeout,
                claim_batch_fills_slots_in_priority_order,
                claim_batch_on_empty_queues_claims_nothing,
                complete_batch_applies_each_outcome,
                complete_and_claim_batch_completes_then_claims,
                complete_and_claim_batch_degenerate_rounds,
                push_front_puts_the_job_first,
                push_front_wakes_an_idle_worker,
                remove_by_class_removes_only_that_class,
                remove_by_class_pages_through_long_queues,
                default_by_class_removals_match_and_page,
            ],
            async delayed: [
                schedule_and_inspect,
                schedule_duplicate_same_bucket_rejected,
                same_payload_different_buckets_allowed,
                due_timestamps_respects_up_to_and_limit,
                promote_due_moves_only_due_items_in_order,
                promote_due_respects_limit,
                promote_removes_index_and_empty_buckets,
                remove_delayed_returns_buckets_and_cleans,
                undecodable_delayed_item_goes_to_failed_with_reason,
                concurrent_schedule_same_job_same_second_stores_one,
                concurrent_promoters_move_each_item_exactly_once,
                concurrent_remove_and_promote_never_both,
                remove_delayed_by_class_removes_that_class_on_that_queue,
                remove_delayed_by_class_pages_through_many_buckets,
            ],
            async precise_delayed: [
                next_due_ms_lies_within_the_declared_precision,
                promote_due_ms_is_never_early_and_within_precision,
                bucket_scheduled_items_fall_due_with_their_bucket,
                second_bucket_views_see_items_scheduled_by_time,
                a_running_scheduler_starts_jobs_never_early_and_within_precision,
                an_earlier_job_wakes_a_sleeping_scheduler,
                only_the_leader_promotes_between_polls,
            ],
            async lock: [
                acquire_is_exclusive,
                ttl_expiry_frees_lock,
                renew_only_by_owner,
                release_only_by_owner,
                locks_lists_live_locks_sorted_not_leader,
                delete_lock_counts,
                concurrent_acquire_has_one_winner,
                get_lock_reads_value_and_ttl,
                set_lock_overwrites_and_resets_ttl,
                incr_lock_counts_and_sets_ttl,
                concurrent_incr_lock_adds_up,
                push_once_pushes_exactly_once_per_key,
            ],
            async failed: [
                push_count_range,
                remove_failed_by_exact_bytes_first_only,
                retry_failed_moves_payload_to_queue_atomically,
                retry_failed_on_missing_entry_changes_nothing,
                concurrent_retries_of_one_entry_requeue_once,
                failed_ids_round_trip_through_text,
                remove_failed_by_id_removes_exactly_that_entry,
                failed_id_actions_refused_when_the_entry_moved,
                remove_one_of_two_identical_entries_by_id,
                retry_failed_by_id_requeues_original_bytes_once,
            ],
            async registry: [
                register_lists_and_pings,
                stale_workers_uses_ping_age,
                register_workers_registers_each,
                ping_workers_pings_each,
                working_on_many_answers_in_order,
                clean_idle_worker_removes_everything,
                clean_busy_worker_requeues_to_head,
                clean_busy_worker_fail_writes_entry_and_counts_failed,
                clean_unknown_worker_returns_none,
                worker_id_member_roundtrip,
            ],
            async stats: [
                incr_and_read,
                stats_sorted_listing,
                per_worker_counters_removed_on_clean,
            ],
            async leader: [
                one_of_two_becomes_leader,
                renew_by_holder_keeps_it,
                other_cannot_renew_or_release,
                expiry_allows_takeover,
                release_frees_it,
                concurrent_candidates_elect_one,
            ],
            async engine: [
                backend_kind_is_named,
                concurrent_workers_run_each_job_once,
                crashed_worker_job_is_recovered,
                graceful_shutdown_finishes_in_flight_job,
                shutdown_deadline_requeues_unfinished_job,
                run_stops_on_a_caller_future,
                pool_scales_with_backlog,
                delayed_job_runs_end_to_end,
                worker_slots_run_each_job_once,
                worker_slots_shutdown_requeues_unfinished,
                worker_slots_jobs_using_the_backend_finish,
                failed_claims_and_completions_lose_no_job,
                panics_anywhere_fail_only_their_job,
                dropping_run_stops_workers,
                retry_under_faults_runs_each_attempt_once,
                pool_reports_a_worker_that_ends_abnormally,
                pool_holds_while_the_runtime_lags,
            ],
            async errors: [
                worker_retries_transient_errors,
                worker_stops_on_a_permanent_error,
                scheduler_retries_transient_and_stops_on_permanent_errors,
                pool_stops_on_a_permanent_error,
                task_server_stops_on_a_permanent_error,
                a_worker_cleaned_while_cut_off_registers_again,
            ],
            async client: [
                enqueue_writes_node_resque_payload,
                args_are_wrapped,
                empty_names_are_rejected,
                length_and_queued_in_fifo_order,
                queued_shows_undecodable_payloads,
                enqueue_batch_keeps_order,
                enqueue_at_buckets_and_refuses_duplicates,
                enqueue_at_bucket_is_never_due_early,
                enqueue_in_uses_rounded_bucket,
                scheduled_at_and_del_delayed_match_args,
                omitted_args_delayed_at_four_seconds,
                timestamps_delayed_at_and_all_delayed,
                ruby_scheduled_items_are_found,
                del_matches_args_and_count,
                del_by_class_removes_every_job_of_the_class,
                del_queue_removes_everything,
                stats_and_leader_are_reported,
                locks_and_del_lock,
                failed_count_range_remove_and_retry,
                failed_lists_undecodable_entries,
                workers_working_on_and_details,
                clean_old_workers_by_ping_age,
                force_clean_busy_worker,
                force_clean_idle_worker,
                retry_stuck_jobs_keeps_original_bytes,
                retries_repair_cjson_empty_args,
                retry_stuck_jobs_handles_many_entries,
                big_integers_survive_working_on_and_failure,
                retry_stuck_jobs_reads_the_failed_list_in_pages,
                enqueue_front_puts_the_job_at_the_head,
                out_of_range_times_are_refused,
                huge_lock_ttls_are_capped,
                enqueue_once_queues_once_per_key,
            ],
            async worker: [
                runs_job_and_reports_success,
                failing_job_goes_to_failed_list,
                unknown_class_fails_clearly,
                undecodable_payload_goes_to_failed_list,
                panicking_task_fails_only_its_job,
                bad_arguments_fail_as_argument_error,
                fifo_within_queue,
                priority_order_across_queues,
                wildcard_worker_finds_new_queues,
                idle_wildcard_worker_wakes_for_a_first_queue,
                idle_slots_take_new_jobs_while_another_runs,
                comma_separated_queues,
                ping_stays_fresh_during_slow_job,
                worker_names_are_unique,
                lifecycle_events_are_emitted,
                restart_under_same_name_recovers_job,
                listed_queues_before_wildcard_keep_priority,
            ],
            async pause: [
                pausing_stops_a_worker_and_resuming_restarts_it,
                wildcard_worker_skips_a_paused_queue,
                multi_slot_worker_skips_a_paused_queue,
                multi_slot_wildcard_worker_skips_a_paused_queue,
                a_worker_started_on_paused_queues_waits_for_the_resume,
                paused_queues_lists_and_unlists,
            ],
            async flow: [
                limits_are_stored_listed_and_removed,
                invalid_limits_are_refused,
                rate_limit_admits_max_starts_per_window,
                rate_limit_window_slides,
                concurrency_cap_admits_k_running_jobs,
                a_limited_queue_is_skipped_for_the_next,
                claim_batch_respects_limits,
                complete_and_claim_batch_refills_only_freed_slots,
                cleaning_a_worker_returns_its_slot,
                stuck_worker_sweep_returns_the_slot,
                workers_never_exceed_the_cap,
                workers_respect_the_rate_limit,
                limits_on_one_queue_leave_others_alone,
            ],
            async task_flow: [
                invalid_task_limits_are_refused,
                task_rate_limit_admits_max_starts_per_window,
                task_rate_limit_window_slides,
                task_cap_admits_k_and_release_frees,
                cleaning_a_worker_returns_its_task_slot,
                stuck_worker_sweep_returns_the_task_slot,
                workers_respect_the_task_rate_limit,
                workers_never_exceed_the_task_cap,
                tasks_without_limits_are_unaffected,
                two_limited_tasks_in_one_queue_do_not_block_each_other,
            ],
            async plugin: [
                custom_plugin_hooks_and_enqueue_veto,
                delay_queue_lock_blocks_identical_delayed_job,
                enqueue_veto_never_drops_a_delayed_job,
                job_lock_runs_different_args_concurrently,
                job_lock_serializes_identical_jobs,
                job_lock_without_reenqueue_drops_duplicate,
                job_lock_holder_keeps_lock_when_reenqueue_collides,
                noop_turns_failure_into_logged_success,
                queue_lock_blocks_identical_jobs,
                queue_lock_expires_and_stale_lock_is_taken_over,
                queue_lock_released_when_job_is_taken,
                retry_success_leaves_nothing,
                retry_limit_counts_attempts,
                retry_backoff_strategy_sets_delays,
                retry_attempt_is_delayed_with_node_resque_keys,
            ],
            async tasks: [
                definitions_and_periodic_plugins,
                periodic_task_enqueued_once_at_boot,
                five_concurrent_runs_give_one_execution,
                boot_during_a_run_adds_no_instance,
                recurrent_rearm_and_stop_work_by_class,
                task_enqueue_and_inspection,
                task_inputs_are_checked_on_enqueue,
                before_perform_can_change_arguments_or_veto,
                task_server_node_shapes,
                five_booting_nodes_enqueue_one_instance,
                a_late_start_after_a_claimed_first_copy_adds_no_instance,
                rearm_never_reads_a_whole_queue_or_schedule,
                task_server_runs_on_custom_parts,
            ],
            async cron: [
                leader_changes_neither_double_nor_skip_fires,
                followers_never_fire,
                first_poll_fires_nothing_from_the_past,
                fires_are_timely_with_a_long_poll_interval,
            ],
            async scheduler: [
                poll_promotes_due_jobs_only,
                never_promotes_before_due_time,
                one_leader_and_failover_on_release,
                failover_after_leader_lock_expires,
                running_schedulers_promote_and_hand_over,
                stuck_worker_job_is_requeued,
                stuck_worker_job_can_be_failed,
                one_bad_item_stops_no_cleaning_or_inspection,
                no_worker_is_judged_on_pings_lost_in_an_outage,
                unpromotable_items_are_reported,
                config_is_validated,
            ],
            async defaults: [
                task_server_defaults_rerun_a_dead_workers_job,
                stuck_timeout_below_three_pings_is_refused,
                task_server_defaults_fail_over_within_bound,
                busy_leader_keeps_its_lock,
            ],
            async admin_overview: [
                overview_counts_queues_delayed_failed_and_totals,
                latency_is_the_head_jobs_age_and_zero_when_empty,
                overview_counts_busy_and_idle_workers,
                overview_reads_all_queues_in_one_call,
            ],
            async admin_queue: [
                queue_detail_pages_jobs_head_first,
                delete_jobs_by_class_and_by_class_and_args,
            ],
            async admin_delayed: [
                delayed_pages_by_time,
                run_now_moves_one_item_to_its_queue_tail,
                delete_one_delayed_item_leaves_other_buckets,
            ],
            async admin_failed: [
                failed_filters_by_class_queue_error_and_time,
                failed_pages_over_matching_entries,
                retry_and_remove_one_by_id,
                selection_actions_count_done_stale_and_failed,
                bulk_remove_by_filter_walks_pages_from_the_tail,
                bulk_retry_by_filter_requeues_and_counts_undecodable,
                bulk_by_filter_with_concurrent_tail_appends,
                bulk_by_filter_covers_a_list_longer_than_a_page,
            ],
            async admin_workers: [
                workers_show_busy_idle_current_job_and_ping_age,
                clean_one_worker_fails_its_job,
                stale_workers_dry_run_and_clean_leave_fresh_ones,
            ],
            async admin_locks: [
                locks_list_with_ttl_and_delete,
            ],
            async admin_pause: [
                pause_and_resume_via_admin,
            ],
            async admin_enqueue: [
                manual_enqueue_runs_on_a_worker,
                manual_enqueue_refuses_non_array_args,
            ],
            async admin_claims: [
                claims_carry_the_enqueue_time_of_every_push_path,
                batch_claims_and_identical_jobs_keep_their_own_times,
            ],
            async timeout: [
                a_job_past_its_timeout_is_stopped_and_fails,
                the_worker_default_applies_unless_the_task_sets_a_limit,
                retry_retries_a_timed_out_job,
                job_context_tells_handed_off_work_to_stop,
                a_multi_slot_worker_times_out_one_slot_only,
            ],
            async admin_cancel: [
                listing_ids_cancel_running_queued_and_delayed_jobs,
            ],
            async cancel: [
                cancel_running_stops_the_job_and_frees_the_worker,
                a_task_ending_on_its_cancellation_is_cancelled_not_a_success,
                cancel_by_id_and_by_args_in_a_multi_slot_worker,
                cancel_removes_queued_and_delayed_jobs,
                cancelling_queued_and_delayed_jobs_emits_events,
                retry_does_not_retry_a_cancelled_job,
                request_cancel_stores_a_mark_and_signals,
                a_cancel_without_its_signal_is_found_by_the_mark,
            ];
            factory model: [
                state_machine,
            ],
        }
    };
}

/// The expansion of [`suite!`]; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __suite_impl {
    (
        $backend:ident, $factory:expr;
        $( async $group:ident : [ $( $test:ident ),* $(,)? ] ),* ;
        $( factory $fgroup:ident : [ $( $ftest:ident ),* $(,)? ] ),* $(,)?
    ) => {
        #[allow(unused_imports)]
        pub mod $backend {
            use super::*;

            /// This backend's factory: a fresh, isolated backend per call.
            pub fn factory() -> impl ::std::future::Future<
                Output = ::std::result::Result<
                    ::std::sync::Arc<dyn $crate::resq_core::Backend>,
                    ::std::string::String,
                >,
            > {
                ($factory)()
            }

            /// Every generated test, as `group::test`.
            pub const TESTS: &[&str] = &[
                $( $( concat!(stringify!($group), "::", stringify!($test)), )* )*
                $( $( concat!(stringify!($fgroup), "::", stringify!($ftest)), )* )*
            ];

            $(
                pub mod $group {
                    $(
                        #[test]
                        fn $test() {
                            $crate::run_backend_test(
                                concat!(stringify!($backend), "::", stringify!($group), "::", stringify!($test)),
                                super::factory,
                                $crate::$group::$test,
                            );
                        }
                    )*
                }
            )*

            $(
                pub mod $fgroup {
                    $(
                        #[test]
                        fn $ftest() {
                            $crate::$fgroup::$ftest(
                                concat!(stringify!($backend), "::", stringify!($fgroup), "::", stringify!($ftest)),
                                super::factory,
                            );
                        }
                    )*
                }
            )*
        }
    };
}

/// True when `RESQ_REQUIRE_BACKENDS=1`: an unreachable backend fails its tests.
pub fn backends_required() -> bool {
    std::env::var(REQUIRE_BACKENDS_ENV).is_ok_and(|v| v.trim() == "1")
}

/// Applies the skip rule to a factory error for test `path`: prints
/// `SKIP <path>: <reason>` to stderr, or panics when backends are required.
pub fn skip_or_fail(path: &str, reason: &str) {
    if backends_required() {
        panic!("{path}: backend unavailable and {REQUIRE_BACKENDS_ENV}=1: {reason}");
    }
    eprintln!("SKIP {path}: {reason}");
}

/// Calls the factory; on `Err` applies [`skip_or_fail`] and returns `None`.
pub async fn connect<F, Fut>(path: &str, factory: F) -> Option<Arc<dyn Backend>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Arc<dyn Backend>, String>>,
{
    match factory().await {
        Ok(backend) => Some(backend),
        Err(reason) => {
            skip_or_fail(path, &reason);
            None
        }
    }
}

/// The runtime every conformance test runs on: the one
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` builds.
pub fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot build the test runtime")
}

/// Runs one backend-level test: builds the runtime, gets a fresh backend
/// from `factory` (or skips), runs `test` on it within [`TEST_TIMEOUT`], and
/// closes the backend.
pub fn run_backend_test<F, Fut, T, TFut>(path: &str, factory: F, test: T)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Arc<dyn Backend>, String>>,
    T: FnOnce(Arc<dyn Backend>) -> TFut,
    TFut: Future<Output = ()>,
{
    test_runtime().block_on(async {
        let Some(backend) = connect(path, factory).await else {
            return;
        };
        if tokio::time::timeout(TEST_TIMEOUT, test(Arc::clone(&backend)))
            .await
            .is_err()
        {
            panic!("{path}: did not finish within {TEST_TIMEOUT:?} (hung backend call?)");
        }
        if let Err(e) = backend.close().await {
            panic!("{path}: close() failed: {e}");
        }
    });
}

/// The source of each group module, to find tests missing from [`suite!`].
const GROUP_SOURCES: &[(&str, &str)] = &[
    ("queue", include_str!("queue.rs")),
    ("delayed", include_str!("delayed.rs")),
    ("precise_delayed", include_str!("precise_delayed.rs")),
    ("lock", include_str!("lock.rs")),
    ("failed", include_str!("failed.rs")),
    ("registry", include_str!("registry.rs")),
    ("stats", include_str!("stats.rs")),
    ("leader", include_str!("leader.rs")),
    ("engine", include_str!("engine.rs")),
    ("errors", include_str!("errors.rs")),
    ("defaults", include_str!("defaults.rs")),
    ("client", include_str!("client.rs")),
    ("worker", include_str!("worker.rs")),
    ("pause", include_str!("pause.rs")),
    ("flow", include_str!("flow.rs")),
    ("task_flow", include_str!("task_flow.rs")),
    ("scheduler", include_str!("scheduler.rs")),
    ("model", include_str!("model.rs")),
    ("plugin", include_str!("plugin.rs")),
    ("tasks", include_str!("tasks.rs")),
    ("cron", include_str!("cron.rs")),
    ("admin_overview", include_str!("admin_overview.rs")),
    ("admin_queue", include_str!("admin_queue.rs")),
    ("admin_delayed", include_str!("admin_delayed.rs")),
    ("admin_failed", include_str!("admin_failed.rs")),
    ("admin_workers", include_str!("admin_workers.rs")),
    ("admin_locks", include_str!("admin_locks.rs")),
    ("admin_pause", include_str!("admin_pause.rs")),
    ("admin_enqueue", include_str!("admin_enqueue.rs")),
    ("admin_claims", include_str!("admin_claims.rs")),
    ("timeout", include_str!("timeout.rs")),
    ("cancel", include_str!("cancel.rs")),
    ("admin_cancel", include_str!("admin_cancel.rs")),
];

/// Every `pub fn` / `pub async fn` defined at the top level of a group
/// module that is not in `listed` (a backend module's `TESTS`), as
/// `group::name`. A test written but not added to [`suite!`] never runs;
/// the suite's own tests assert this is empty.
pub fn unlisted_tests(listed: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    for (group, source) in GROUP_SOURCES {
        for line in source.lines() {
            let rest = line
                .strip_prefix("pub async fn ")
                .or_else(|| line.strip_prefix("pub fn "));
            let Some(rest) = rest else { continue };
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let full = format!("{group}::{name}");
            if !listed.contains(&full.as_str()) {
                missing.push(full);
            }
        }
    }
    missing
}
