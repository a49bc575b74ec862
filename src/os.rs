//! Facts about this process that the layers share: the effective user id (configuration and
//! log file checks, from `rustix`'s safe wrappers, so that no layer needs `unsafe` or reaches up
//! into the FFI for it), the application's name and the time (approval metadata and the request
//! journal). Nothing here knows PKCS#11 or the TSB.

/// The effective user id of the process.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The application shown to approvers: the full executable name (`/proc/self/exe`, else
/// argv[0]; `/proc/self/comm` is cut at 15 characters), plus what it is when it is a known helper
/// process that signs on behalf of another program.
pub(crate) fn process_name() -> String {
    let exe = std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        // A replaced binary reads "name (deleted)".
        .map(|n| n.trim_end_matches(" (deleted)").to_string());
    // The current command line: nginx rewrites it to "nginx: worker process".
    let cmdline = std::fs::read("/proc/self/cmdline")
        .map(|b| {
            let first = b.split(|&c| c == 0).next().unwrap_or(&[]);
            String::from_utf8_lossy(first).trim().to_string()
        })
        .unwrap_or_default();
    let name = pick_name(exe, std::env::args().next(), || {
        std::fs::read_to_string("/proc/self/comm")
            .map(|s| s.trim().to_string())
            .ok()
    });
    describe(&name, &cmdline, parent_name().as_deref())
}

/// The first non-empty of: the executable's file name, the file name of argv[0], `comm`.
fn pick_name(
    exe: Option<String>,
    arg0: Option<String>,
    comm: impl FnOnce() -> Option<String>,
) -> String {
    let file_name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    exe.filter(|s| !s.is_empty())
        .or_else(|| arg0.map(|a| file_name(&a)))
        .or_else(comm)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The parent process's name (`/proc/<ppid>/comm`), for helpers started by another program.
fn parent_name() -> Option<String> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    let ppid = stat.rsplit(')').next()?.split_whitespace().nth(1)?;
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
    Some(comm.trim().to_string()).filter(|s| !s.is_empty())
}

/// `name`, with a note when the process is a known helper that signs for another program.
fn describe(name: &str, cmdline: &str, parent: Option<&str>) -> String {
    let from = |what: &str| match parent {
        Some(p) => format!("{name} ({what}, started by {p})"),
        None => format!("{name} ({what})"),
    };
    match name {
        "ssh-pkcs11-helper" => from("OpenSSH's PKCS#11 helper of ssh-agent or ssh"),
        "p11-kit-remote" => from("p11-kit RPC helper: the signing application is at the other end"),
        "p11-kit-server" => from("p11-kit server: the signing application is a p11-kit RPC client"),
        _ if cmdline.starts_with("nginx: worker process") => {
            format!("{name} (nginx worker process)")
        }
        _ if cmdline.starts_with("nginx: master process") => {
            format!("{name} (nginx master process)")
        }
        _ => name.to_string(),
    }
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// UTC time as `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, whole seconds).
pub(crate) fn rfc3339_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn app_is_the_full_executable_name() {
        // The test binary's name ("tsb_pkcs11-<hash>") is longer than the 15 characters of
        // /proc/self/comm.
        let exe = std::env::current_exe().unwrap();
        let full = exe.file_name().unwrap().to_string_lossy().into_owned();
        assert!(full.len() > 15, "{full}");
        assert_eq!(super::process_name(), full);
    }

    #[test]
    fn helpers_are_named() {
        assert_eq!(
            describe("ssh-pkcs11-helper", "/usr/lib/openssh/ssh-pkcs11-helper", Some("ssh-agent")),
            "ssh-pkcs11-helper (OpenSSH's PKCS#11 helper of ssh-agent or ssh, started by ssh-agent)"
        );
        assert!(describe("p11-kit-server", "", None).starts_with("p11-kit-server (p11-kit server"));
        assert!(describe("p11-kit-remote", "", Some("ssh")).contains("RPC helper"));
        assert_eq!(
            describe("nginx", "nginx: worker process", Some("nginx")),
            "nginx (nginx worker process)"
        );
        assert_eq!(describe("openssl", "openssl", Some("bash")), "openssl");
        assert_eq!(describe("java", "java", None), "java");
    }

    #[test]
    fn time_format() {
        let t = super::rfc3339_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20"), "{t}");
        assert!(t.ends_with('Z'));
    }

    #[test]
    fn nginx_master_and_the_parent_process() {
        assert_eq!(
            describe("nginx", "nginx: master process /usr/sbin/nginx", None),
            "nginx (nginx master process)"
        );
        // The parent's name, found through the parent pid the kernel reports.
        let ppid = std::os::unix::process::parent_id();
        let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap();
        assert_eq!(super::parent_name().as_deref(), Some(comm.trim()));
    }

    #[test]
    fn host_name_is_the_kernel_node_name() {
        let out = std::process::Command::new("uname")
            .arg("-n")
            .output()
            .unwrap();
        let node = String::from_utf8(out.stdout).unwrap();
        assert!(!node.trim().is_empty());
        assert_eq!(super::host_name(), node.trim());
    }

    #[test]
    fn the_name_falls_back_from_exe_to_argv0_to_comm() {
        use super::pick_name;
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            pick_name(s("signer"), s("/usr/bin/other"), || s("comm")),
            "signer"
        );
        // An empty executable name is no name.
        assert_eq!(pick_name(s(""), s("/usr/bin/app"), || s("comm")), "app");
        assert_eq!(pick_name(None, s("tool"), || s("comm")), "tool");
        assert_eq!(pick_name(None, None, || s("comm")), "comm");
        assert_eq!(pick_name(None, s(""), || s("comm")), "unknown");
        assert_eq!(pick_name(None, None, || s("")), "unknown");
        assert_eq!(pick_name(None, None, || None), "unknown");
    }
}
