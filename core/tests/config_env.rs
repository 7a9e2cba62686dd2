//! `RESQ_TASKS_*` environment variables override the TOML file. This is
//! the only test in its binary, so setting variables races nothing.

use resq_core::config::{LogLevel, TaskServerConfig};

#[test]
fn environment_overrides_the_file() {
    let dir = std::env::temp_dir().join(format!("resq-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resq.toml");
    std::fs::write(
        &path,
        "backend = \"redis://127.0.0.1:6379\"\nscheduler = true\nqueues = [\"a\", \"b\"]\nmax_task_processors = 2\n\
         [log_levels]\nsuccess = \"debug\"\n",
    )
    .unwrap();
    let from_file = TaskServerConfig::load(&path).unwrap();
    assert_eq!(from_file.backend, "redis://127.0.0.1:6379");
    assert_eq!(from_file.queues, vec!["a".to_owned(), "b".to_owned()]);
    assert!(from_file.scheduler);

    std::env::set_var("RESQ_TASKS_SCHEDULER", "false");
    std::env::set_var("RESQ_TASKS_MAX_TASK_PROCESSORS", "8");
    std::env::set_var("RESQ_TASKS_QUEUES", "critical,default");
    std::env::set_var("RESQ_TASKS_BACKEND", "postgres://postgres@127.0.0.1:5432/test");
    std::env::set_var("RESQ_TASKS_LOG_LEVELS", "{failure=\"warn\"}");
    assert!(!from_file.log_args, "job arguments are not logged by default");
    std::env::set_var("RESQ_TASKS_LOG_ARGS", "true");
    let merged = TaskServerConfig::load(&path).unwrap();
    assert!(merged.log_args);
    assert!(!merged.scheduler);
    assert_eq!(merged.max_task_processors, 8);
    assert_eq!(merged.queues, vec!["critical".to_owned(), "default".to_owned()]);
    assert_eq!(merged.backend, "postgres://postgres@127.0.0.1:5432/test");
    assert_eq!(merged.log_level("failure"), LogLevel::Warn);
    let env_only = TaskServerConfig::from_env().unwrap();
    assert_eq!(env_only.max_task_processors, 8);
    assert_eq!(env_only.timeout_ms, 5000, "defaults under the variables");

    std::env::set_var("RESQ_TASKS_MAX_TASK_PROCESSORS", "many");
    let err = TaskServerConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.to_lowercase().contains("max_task_processors") && err.contains("RESQ_TASKS_"),
        "{err}"
    );

    // A stuck-worker timeout from the environment is checked like one from
    // the file: under three ping intervals (15 s) it is refused.
    std::env::set_var("RESQ_TASKS_MAX_TASK_PROCESSORS", "8");
    std::env::set_var("RESQ_TASKS_STUCK_WORKER_TIMEOUT_MS", "3000");
    for err in [
        TaskServerConfig::load(&path).unwrap_err().to_string(),
        TaskServerConfig::from_env().unwrap_err().to_string(),
    ] {
        assert!(
            err.contains("stuck_worker_timeout_ms") && err.contains("ping interval") && err.contains("twice"),
            "{err}"
        );
    }
    std::env::set_var("RESQ_TASKS_STUCK_WORKER_TIMEOUT_MS", "20000");
    assert_eq!(TaskServerConfig::load(&path).unwrap().stuck_worker_timeout_ms, 20_000);
    std::fs::remove_dir_all(&dir).ok();
}
