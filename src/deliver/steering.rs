//! The environment variable names a secret must not be delivered under
//! unless allowed by name (`--allow-env-name`): the hooks of the dynamic
//! loader, of shells and of interpreters commonly used as entrypoints, which
//! decide which program runs or what code it loads. `env.rs` refuses them.

/// Variable names that decide which program runs or what code gets loaded
/// into it, rather than configure it: a secret delivered in the environment
/// under one of these names is refused (exit 78, naming them all) unless
/// `--allow-env-name` names it exactly. Whoever can write a secret must not
/// thereby choose the code that runs with all the others.
///
/// The line: a name is here when a dynamic loader, a shell or a language
/// runtime commonly used as an entrypoint reads it *to find or load code*
/// (the program itself, a library, a module, a file it sources or runs). A
/// name a program reads to decide what to do, even to run a helper
/// (`SHELL`, `EDITOR`, `PAGER`, `GIT_SSH_COMMAND`), or data it parses
/// (`LOCPATH`, `TZDIR`, `SSL_CERT_FILE`) is ordinary configuration and not
/// here. `IFS` is not here: bash, dash and busybox sh reset it at start.
/// A pattern ending in `*` is a prefix. docs/security.md lists the same
/// names with the same reasons (a test below keeps them in step).
pub const STEERING: &[(&str, &str)] = &[
    // The dynamic loader (glibc, musl).
    ("LD_*", "the dynamic loader: LD_PRELOAD and LD_AUDIT load libraries into the program, LD_LIBRARY_PATH chooses where its libraries come from; the whole family, none of it is ordinary configuration"),
    ("GLIBC_TUNABLES", "parsed by glibc's loader before the program runs (CVE-2023-4911) and changes how it loads and allocates"),
    ("GCONV_PATH", "glibc's iconv loads conversion modules (shared objects) from these directories"),
    // Commands and shells.
    ("PATH", "where the program's own commands (and `sh -c` scripts') are found; svid-exec itself always finds the program in its own PATH"),
    ("BASH_ENV", "a file every non-interactive bash (`bash -c`, `#!/bin/bash` entrypoints) sources before its script"),
    ("ENV", "a file an interactive POSIX shell (sh, dash, ksh, bash in POSIX mode) sources at start"),
    ("BASH_FUNC_*", "exported bash functions: `BASH_FUNC_ls%%` defines `ls` in every bash the program starts, replacing the command"),
    ("SHELLOPTS", "shell options for every bash started (xtrace with PS4 runs code)"),
    ("BASHOPTS", "shopt options for every bash started"),
    ("PS4", "expanded by bash, command substitution included, before every traced command"),
    ("EXECIGNORE", "bash skips matching files in its PATH lookup, so another program runs"),
    // Interpreters commonly used as entrypoints.
    ("PYTHONPATH", "where Python imports modules from, ahead of the standard ones"),
    ("PYTHONHOME", "where Python finds its standard library"),
    ("PYTHONUSERBASE", "the user site-packages directory Python imports from"),
    ("PYTHONPLATLIBDIR", "where Python finds its platform-specific library"),
    ("PYTHONSTARTUP", "a file an interactive Python runs at start"),
    ("NODE_OPTIONS", "Node.js options: --require and --import load code before the program"),
    ("NODE_PATH", "where Node.js resolves modules from"),
    ("PERL5OPT", "Perl options: -M loads modules before the program"),
    ("PERL5LIB", "where Perl loads modules from (@INC)"),
    ("PERLLIB", "where Perl loads modules from (@INC)"),
    ("PERL5DB", "the code of Perl's debugger"),
    ("RUBYOPT", "Ruby options: -r loads libraries before the program"),
    ("RUBYLIB", "where Ruby loads libraries from"),
    ("JAVA_TOOL_OPTIONS", "JVM options read by every JVM: -javaagent loads code, -cp changes the classes"),
    ("JDK_JAVA_OPTIONS", "JVM options read by the java launcher (Java 9+), as above"),
    ("_JAVA_OPTIONS", "JVM options read by HotSpot, as above"),
    ("CLASSPATH", "where the JVM loads classes from"),
    ("PHPRC", "where PHP reads php.ini (auto_prepend_file, extensions)"),
    ("PHP_INI_SCAN_DIR", "more php.ini files PHP reads"),
    ("LUA_INIT*", "Lua code, or a file of it, run at start"),
    ("LUA_PATH*", "where Lua loads modules from"),
    ("LUA_CPATH*", "where Lua loads native modules from"),
    ("DOTNET_STARTUP_HOOKS", "assemblies .NET runs before the program's Main"),
    ("CORECLR_PROFILER_PATH*", "a native profiler library .NET loads into the program"),
    // Libraries commonly linked into the program.
    ("OPENSSL_CONF", "OpenSSL's configuration, which can load engines and providers (shared objects)"),
    ("OPENSSL_ENGINES", "where OpenSSL loads engines from"),
    ("OPENSSL_MODULES", "where OpenSSL loads providers from"),
];

/// Whether `name` is one of [`STEERING`].
pub fn is_steering(name: &str) -> bool {
    STEERING
        .iter()
        .any(|(pattern, _)| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *pattern,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_configuration_is_not_steering() {
        for name in [
            "HOME",
            "SHELL",
            "EDITOR",
            "PAGER",
            "IFS",
            "LANG",
            "TZ",
            "PYTHONUNBUFFERED",
            "NODE_ENV",
            "JAVA_HOME",
            "DATABASE_URL",
            "PATH_PREFIX",
            "XLD_PRELOAD",
        ] {
            assert!(!is_steering(name), "{name}");
        }
        for name in [
            "LD_AUDIT",
            "LUA_INIT_5_4",
            "CORECLR_PROFILER_PATH_64",
            "BASH_FUNC_ls%%",
        ] {
            assert!(is_steering(name), "{name}");
        }
    }

    #[test]
    fn docs_security_lists_every_steering_name() {
        let doc = include_str!("../../docs/security.md");
        let missing: Vec<&str> = STEERING
            .iter()
            .map(|(pattern, _)| *pattern)
            .filter(|pattern| !doc.contains(&format!("`{pattern}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/security.md does not list {missing:?}"
        );
    }
}
