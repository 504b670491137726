//! `start --debug`: a prompt on the terminal to set breakpoints on nodes and ports, and to look
//! at the symbols, processes and frames of the running namespace (see `docs/debugging.md`).
//!
//! Commands are read a line at a time: on a terminal through a line editor (editing, history,
//! Esc or Ctrl-C to quit), from a pipe as they come, so a session can be scripted. One item
//! prints as JSON indented by 4 spaces, a list as the table `get` prints.
//! Whatever is shown passes through the namespace's secret masking: a spec or a payload may
//! hold a secret's data once bound.
//!
//! When a packet pauses at a breakpoint its frame is printed as it happens; `continue` lets it
//! go on and shows the next paused one, if any. Leaving the prompt (`quit`, end of input, Esc,
//! Ctrl-C) releases every paused packet and stops pausing, so the server can stop gracefully.

use std::io::{BufRead as _, Write as _};
use std::sync::Arc;

use uniflow_core::agent::{Agent, Frame};
use uniflow_value::Value;
use uuid::Uuid;

use crate::Running;
use crate::table;

/// The prompt.
pub const PROMPT: &str = "(debug) ";

/// What a command asks of the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Print this (nothing when empty) and prompt again.
    Show(String),
    /// Leave the prompt.
    Quit,
}

/// The commands of one session: see the module's documentation.
pub struct Debugger<'r> {
    running: &'r Running,
    agent: Arc<Agent>,
    /// The paused frame shown last (its process and start), so it is shown once.
    shown: Option<(Uuid, std::time::Instant)>,
}

impl<'r> Debugger<'r> {
    /// A session over `running`, whose namespace records with `agent`.
    pub fn new(running: &'r Running, agent: Arc<Agent>) -> Debugger<'r> {
        Debugger {
            running,
            agent,
            shown: None,
        }
    }

    /// Runs one command line.
    pub fn command(&mut self, line: &str) -> Reply {
        let args: Vec<&str> = line.split_whitespace().collect();
        let Some((&verb, args)) = args.split_first() else {
            return Reply::Show(String::new());
        };
        let shown = match verb {
            "quit" | "q" => return Reply::Quit,
            "break" | "b" => self.add_breakpoint(args),
            "continue" | "c" => {
                self.agent.resume();
                Ok(self.newly_paused().unwrap_or_default())
            }
            "delete" | "d" => self.delete(args.first().copied()),
            "breakpoints" | "bps" => {
                Ok(list(self.agent.breakpoints().iter().map(|b| b.to_value())))
            }
            "breakpoint" | "bp" => self.breakpoint(args.first().copied()),
            "symbols" | "sbs" => Ok(list(
                self.running
                    .graph()
                    .symbols()
                    .iter()
                    .map(|s| symbol_row(&s.spec)),
            )),
            "symbol" | "sb" => self.symbol(args.first().copied()),
            "processes" | "procs" => Ok(list(self.agent.processes().iter().map(|p| p.to_value()))),
            "process" | "proc" => self.process(args.first().copied()),
            "frames" | "frms" => self.frames(args.first().copied()),
            "frame" | "frm" => Ok(self
                .agent
                .current()
                .map(|(frame, _)| item(&frame.to_value()))
                .unwrap_or_default()),
            other => Err(format!("unknown command '{other}'")),
        };
        let text = shown.unwrap_or_else(|e| format!("Error: {e}."));
        Reply::Show(self.running.redact(&text))
    }

    /// The current paused frame, if it was not shown yet (then it counts as shown).
    pub fn newly_paused(&mut self) -> Option<String> {
        let (frame, _) = self.agent.current()?;
        let key = (frame.process, frame.started);
        if self.shown == Some(key) {
            return None;
        }
        self.shown = Some(key);
        Some(self.running.redact(&item(&frame.to_value())))
    }

    fn add_breakpoint(&self, args: &[&str]) -> Result<String, String> {
        let Some(&name) = args.first() else {
            return Ok(item(&self.agent.add_breakpoint(None, None).to_value()));
        };
        let graph = self.running.graph();
        let found: Vec<(usize, &uniflow_core::Symbol)> = graph
            .symbols()
            .iter()
            .enumerate()
            .filter(|(_, s)| is_named(&s.spec, name))
            .collect();
        if found.is_empty() {
            return Err(format!("symbol '{name}' not found"));
        }
        let port = args.get(1).copied();
        if let Some(port) = port {
            let exists = |s: &uniflow_core::Symbol| {
                port == uniflow_core::port::INIT
                    || s.node.in_port(port).is_some()
                    || s.node.out_port(port).is_some()
            };
            if !found.iter().any(|(_, s)| exists(s)) {
                return Err(format!("port '{port}' not found on symbol '{name}'"));
            }
        }
        let added: Vec<Value> = found
            .iter()
            .map(|(i, s)| {
                self.agent
                    .add_breakpoint(Some(Arc::from(s.spec.label(*i))), port.map(Arc::from))
                    .to_value()
            })
            .collect();
        Ok(match added.as_slice() {
            [one] => item(one),
            many => list(many.iter().cloned()),
        })
    }

    /// The breakpoint `id`, or the one holding the current paused packet.
    fn breakpoint_id(&self, id: Option<&str>) -> Result<Option<u64>, String> {
        match id {
            Some(id) => {
                let found = id
                    .parse::<u64>()
                    .ok()
                    .filter(|id| self.agent.breakpoints().iter().any(|b| b.id == *id));
                found
                    .map(Some)
                    .ok_or_else(|| format!("breakpoint '{id}' not found"))
            }
            None => Ok(self.agent.current().map(|(_, id)| id)),
        }
    }

    fn delete(&self, id: Option<&str>) -> Result<String, String> {
        if let Some(id) = self.breakpoint_id(id)? {
            self.agent.remove_breakpoint(id);
        }
        Ok(String::new())
    }

    fn breakpoint(&self, id: Option<&str>) -> Result<String, String> {
        let Some(id) = self.breakpoint_id(id)? else {
            return Ok(String::new());
        };
        Ok(self
            .agent
            .breakpoints()
            .iter()
            .find(|b| b.id == id)
            .map(|b| item(&b.to_value()))
            .unwrap_or_default())
    }

    fn symbol(&self, name: Option<&str>) -> Result<String, String> {
        let graph = self.running.graph();
        let name = match name {
            Some(name) => name.to_owned(),
            None => match self.agent.current() {
                Some((frame, _)) => frame.symbol.to_string(),
                None => return Ok(String::new()),
            },
        };
        let found: Vec<Value> = graph
            .symbols()
            .iter()
            .enumerate()
            .filter(|(i, s)| is_named(&s.spec, &name) || s.spec.label(*i) == name)
            .map(|(_, s)| s.spec.to_value())
            .collect();
        match found.as_slice() {
            [] => Err(format!("symbol '{name}' not found")),
            [one] => Ok(item(one)),
            many => Ok(list(many.iter().map(|spec| match spec {
                Value::Map(m) => symbol_row_of(m),
                other => other.clone(),
            }))),
        }
    }

    /// Process `id`, or the current paused packet's.
    fn process_id(&self, id: Option<&str>) -> Result<Option<Uuid>, String> {
        match id {
            Some(text) => Uuid::parse_str(text)
                .ok()
                .filter(|id| self.agent.process(*id).is_some())
                .map(Some)
                .ok_or_else(|| format!("process '{text}' not found")),
            None => Ok(self.agent.current().map(|(frame, _)| frame.process)),
        }
    }

    fn process(&self, id: Option<&str>) -> Result<String, String> {
        Ok(self
            .process_id(id)?
            .and_then(|id| self.agent.process(id))
            .map(|p| item(&p.to_value()))
            .unwrap_or_default())
    }

    fn frames(&self, id: Option<&str>) -> Result<String, String> {
        let frames = self
            .process_id(id)?
            .and_then(|id| self.agent.frames(id))
            .unwrap_or_default();
        Ok(list(frames.iter().map(Frame::to_value)))
    }
}

/// Whether `spec` has this id or name.
fn is_named(spec: &uniflow_spec::Spec, key: &str) -> bool {
    spec.id.as_deref() == Some(key) || spec.name.as_deref() == Some(key)
}

/// A row of `symbols`: the spec's id, name, kind and namespace.
fn symbol_row(spec: &uniflow_spec::Spec) -> Value {
    match spec.to_value() {
        Value::Map(m) => symbol_row_of(&m),
        other => other,
    }
}

fn symbol_row_of(spec: &uniflow_value::Map) -> Value {
    let mut row = uniflow_value::Map::new();
    for key in ["id", "name", "kind", "namespace"] {
        if let Some(value) = spec.get(key) {
            row = row.insert(key, value.clone());
        }
    }
    Value::Map(row)
}

/// One item: JSON indented by 4 spaces.
fn item(value: &Value) -> String {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut writer = serde_json::Serializer::with_formatter(&mut out, formatter);
    match value.serialize(&mut writer) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => format!("Error: {e}."),
    }
}

/// A list: the table, or nothing when empty.
fn list(rows: impl Iterator<Item = Value>) -> String {
    let rows: Vec<Value> = rows.collect();
    if rows.is_empty() {
        return String::new();
    }
    table::render(&rows)
}

/// Runs the prompt on stdin and stdout until `quit`, the end of input or `stop` resolves
/// (Ctrl-C or SIGTERM); then releases every paused packet. On a terminal the line can be
/// edited, earlier lines come back with the arrows, and Esc or Ctrl-C quits, as upstream's
/// prompt does; from a pipe, lines are read as they come.
///
/// # Errors
/// When stdout cannot be written.
pub async fn run(
    running: &Running,
    agent: Arc<Agent>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    // Lines come from a thread of their own: stdin has no asynchronous reader that a pipe and
    // a terminal both serve, and the thread blocked on it ends with the process.
    let (lines, input) = tokio::sync::mpsc::channel::<String>(16);
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let prompt = if terminal {
        Prompt::editor(lines)?
    } else {
        std::thread::Builder::new()
            .name("debug-input".to_owned())
            .spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    if lines.blocking_send(line).is_err() {
                        break;
                    }
                }
            })?;
        Prompt::Plain
    };
    let result = session(running, &agent, stop, input, prompt).await;
    agent.release_all();
    result
}

/// How the prompt is shown and what it prints between lines.
enum Prompt {
    /// Written after every reply; for a pipe.
    Plain,
    /// A line editor on another thread shows it. It waits for `next` after each line, so a
    /// reply is printed before the prompt comes back; what comes meanwhile (a packet pausing)
    /// goes through `printer`, which prints above the line being edited.
    Editor {
        next: std::sync::mpsc::Sender<()>,
        printer: Box<dyn rustyline::ExternalPrinter + Send>,
        /// The terminal's settings before the editor took it over, restored however the
        /// session ends: a stop signal leaves the editor waiting for a key, with the
        /// terminal still in its raw mode.
        saved: Option<rustix::termios::Termios>,
    },
}

impl Prompt {
    /// Starts the line editor on a thread of its own, sending each line to `lines`; the
    /// thread ends (and so the session) at Esc, Ctrl-C or Ctrl-D.
    fn editor(lines: tokio::sync::mpsc::Sender<String>) -> anyhow::Result<Prompt> {
        use rustyline::{Cmd, Config, Editor, KeyCode, KeyEvent, Modifiers, error::ReadlineError};
        let saved = rustix::termios::tcgetattr(std::io::stdin()).ok();
        let (next, ready) = std::sync::mpsc::channel::<()>();
        let (printer_to, printer) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("debug-input".to_owned())
            .spawn(move || {
                // A lone Esc is told from the start of an arrow key's sequence by the 50 ms
                // after it in which nothing else comes.
                let config = Config::builder()
                    .keyseq_timeout(Some(50))
                    .auto_add_history(true)
                    .build();
                let mut editor = match Editor::<(), rustyline::history::MemHistory>::with_history(
                    config,
                    rustyline::history::MemHistory::new(),
                ) {
                    Ok(editor) => editor,
                    Err(e) => {
                        let _ = printer_to.send(Err(e));
                        return;
                    }
                };
                editor.bind_sequence(KeyEvent(KeyCode::Esc, Modifiers::NONE), Cmd::Interrupt);
                let made = editor.create_external_printer();
                if printer_to
                    .send(made.map(|p| Box::new(p) as Box<_>))
                    .is_err()
                {
                    return;
                }
                loop {
                    match editor.readline(PROMPT) {
                        Ok(line) => {
                            if lines.blocking_send(line).is_err() || ready.recv().is_err() {
                                break;
                            }
                        }
                        // Esc, Ctrl-C and Ctrl-D end the input, which quits.
                        Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "the debugger's prompt failed");
                            break;
                        }
                    }
                }
            })?;
        let printer = printer
            .recv()
            .map_err(|_| anyhow::anyhow!("the debugger's prompt did not start"))??;
        Ok(Prompt::Editor {
            next,
            printer,
            saved,
        })
    }

    /// After a command's reply: shows the prompt again.
    fn again(&mut self, stdout: &mut std::io::Stdout) -> std::io::Result<()> {
        match self {
            Prompt::Plain => {
                write!(stdout, "{PROMPT}")?;
                stdout.flush()
            }
            Prompt::Editor { next, .. } => {
                stdout.flush()?;
                // The editor is gone when its input ended; the session sees that next.
                let _ = next.send(());
                Ok(())
            }
        }
    }

    /// Prints `text` while the prompt is showing.
    fn interject(&mut self, stdout: &mut std::io::Stdout, text: &str) -> std::io::Result<()> {
        match self {
            Prompt::Plain => {
                writeln!(stdout, "\n{text}")?;
                write!(stdout, "{PROMPT}")?;
                stdout.flush()
            }
            Prompt::Editor { printer, .. } => printer
                .print(format!("{text}\n"))
                .map_err(std::io::Error::other),
        }
    }
}

impl Drop for Prompt {
    fn drop(&mut self) {
        if let Prompt::Editor {
            saved: Some(saved), ..
        } = self
        {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

/// The session's loop: see [`run`].
async fn session(
    running: &Running,
    agent: &Arc<Agent>,
    stop: impl std::future::Future<Output = ()>,
    mut input: tokio::sync::mpsc::Receiver<String>,
    mut prompt: Prompt,
) -> anyhow::Result<()> {
    let mut debugger = Debugger::new(running, Arc::clone(agent));
    let mut pauses = agent.pauses();
    let mut stdout = std::io::stdout();
    if let Prompt::Plain = prompt {
        write!(stdout, "{PROMPT}")?;
        stdout.flush()?;
    }
    tokio::pin!(stop);
    loop {
        tokio::select! {
            line = input.recv() => match line {
                // The end of input quits, as `quit` does.
                None => {
                    writeln!(stdout)?;
                    break;
                }
                Some(line) => match debugger.command(&line) {
                    Reply::Quit => break,
                    Reply::Show(text) => {
                        if !text.is_empty() {
                            writeln!(stdout, "{text}")?;
                        }
                        prompt.again(&mut stdout)?;
                    }
                },
            },
            Ok(()) = pauses.changed() => {
                if let Some(text) = debugger.newly_paused() {
                    prompt.interject(&mut stdout, &text)?;
                }
            }
            () = &mut stop => {
                writeln!(stdout)?;
                break;
            }
        }
    }
    stdout.flush()?;
    Ok(())
}
