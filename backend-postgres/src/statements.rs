//! Every SQL statement of one backend, rendered once for its schema.
//!
//! Each concept's module owns its statement templates (`{s}` for the
//! schema, `{ch}` for the notification channel, `{dch}` for the delayed one, `{ns}` for the advisory
//! lock namespace, see [`crate::names`]); this module only lists them, so
//! that a backend renders each template once when it is built.

use crate::names::Names;
use crate::{cancel, delayed, failed, leader, lock, queue, stats, task_flow, worker};

macro_rules! statements {
    ($( $field:ident => $template:path ),* $(,)?) => {
        /// The rendered statements, one field per template.
        pub(crate) struct Statements {
            $( pub(crate) $field: String, )*
        }

        impl Statements {
            /// Renders every template for `names`' schema.
            pub(crate) fn render(names: &Names) -> Statements {
                Statements {
                    $( $field: names.render($template), )*
                }
            }
        }
    };
}

statements! {
    push => queue::PUSH,
    push_batch => queue::PUSH_BATCH,
    push_head => queue::PUSH_HEAD,
    claim => queue::CLAIM,
    claim_batch => queue::CLAIM_BATCH,
    complete_batch => queue::COMPLETE_BATCH,
    complete_and_claim => queue::COMPLETE_AND_CLAIM,
    complete_and_claim_one => queue::COMPLETE_AND_CLAIM_ONE,
    complete_success => queue::COMPLETE_SUCCESS,
    complete_failure => queue::COMPLETE_FAILURE,
    complete_discard => queue::COMPLETE_DISCARD,
    queue_len => queue::QUEUE_LEN,
    queue_stats => queue::QUEUE_STATS,
    queue_slice => queue::QUEUE_SLICE,
    queue_range => queue::QUEUE_RANGE,
    remove_from_head => queue::REMOVE_FROM_HEAD,
    remove_from_tail => queue::REMOVE_FROM_TAIL,
    remove_all => queue::REMOVE_ALL,
    class_candidates => queue::CLASS_CANDIDATES,
    remove_ids => queue::REMOVE_IDS,
    lock_queue => queue::LOCK_QUEUE,
    delete_queue => queue::DELETE_QUEUE,
    queues => queue::QUEUES,
    pause_queue => queue::PAUSE_QUEUE,
    resume_queue => queue::RESUME_QUEUE,
    paused_queues => queue::PAUSED_QUEUES,
    set_queue_limits => queue::SET_QUEUE_LIMITS,
    queue_limits => queue::QUEUE_LIMITS,
    any_ready => queue::ANY_READY,
    any_job => queue::ANY_JOB,
    schedule => delayed::SCHEDULE,
    due_timestamps => delayed::DUE_TIMESTAMPS,
    delayed_at => delayed::DELAYED_AT,
    timestamps_of => delayed::TIMESTAMPS_OF,
    remove_delayed => delayed::REMOVE_DELAYED,
    delayed_class_candidates => delayed::CLASS_CANDIDATES,
    remove_delayed_items => delayed::REMOVE_ITEMS,
    take_due => delayed::TAKE_DUE,
    take_due_ms => delayed::TAKE_DUE_MS,
    next_due => delayed::NEXT_DUE,
    push_failed_batch => delayed::PUSH_FAILED_BATCH,
    promote_one => delayed::PROMOTE_ONE,
    remove_delayed_at => delayed::REMOVE_AT,
    delayed_bucket_sizes => delayed::BUCKET_SIZES,
    delayed_count => delayed::DELAYED_COUNT,
    acquire_lock => lock::ACQUIRE_LOCK,
    renew_lock => lock::RENEW_LOCK,
    release_lock => lock::RELEASE_LOCK,
    locks => lock::LOCKS,
    delete_lock => lock::DELETE_LOCK,
    sweep_locks => lock::SWEEP_LOCKS,
    get_lock => lock::GET_LOCK,
    set_lock => lock::SET_LOCK,
    incr_lock => lock::INCR_LOCK,
    push_once => lock::PUSH_ONCE,
    acquire_leader => leader::ACQUIRE_LEADER,
    release_leader => leader::RELEASE_LEADER,
    leader => leader::LEADER,
    push_failed => failed::PUSH_FAILED,
    failed_count => failed::FAILED_COUNT,
    failed_slice => failed::FAILED_SLICE,
    failed_range => failed::FAILED_RANGE,
    remove_failed => failed::REMOVE_FAILED,
    retry_failed => failed::RETRY_FAILED,
    remove_failed_at => failed::REMOVE_FAILED_AT,
    retry_failed_at => failed::RETRY_FAILED_AT,
    register_worker => worker::REGISTER_WORKER,
    ping_worker => worker::PING_WORKER,
    register_workers => worker::REGISTER_WORKERS,
    ping_workers => worker::PING_WORKERS,
    working_on_many => worker::WORKING_ON_MANY,
    worker_times => worker::WORKER_TIMES,
    workers => worker::WORKERS,
    worker_started => worker::WORKER_STARTED,
    working_on => worker::WORKING_ON,
    stale_workers => worker::STALE_WORKERS,
    claim_guard => worker::CLAIM_GUARD,
    clean_worker => worker::CLEAN_WORKER,
    fail_orphan => worker::FAIL_ORPHAN,
    forget_worker_stats => worker::FORGET_WORKER_STATS,
    incr_stat => stats::INCR_STAT,
    stat => stats::STAT,
    stats => stats::STATS,
    request_cancel => cancel::REQUEST_CANCEL,
    cancel_marks => cancel::CANCEL_MARKS,
    clear_cancel => cancel::CLEAR_CANCEL,
    acquire_task_start => task_flow::ACQUIRE_TASK_START,
    release_task_slot => task_flow::RELEASE_TASK_SLOT,
    task_slots_held => task_flow::TASK_SLOTS_HELD,
}
