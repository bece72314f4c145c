/** Base class of every error Lathe reports to users: a message that says where and how to fix, never a stack. */
export class LatheError extends Error {
  /** Process exit code the CLI uses for this error (2 = bad input). */
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** One problem in a recipe, located by its dotted path, e.g. `model.heads`. */
export interface RecipeIssue {
  path: string;
  message: string;
}

/** A recipe failed validation; carries every issue found, not just the first. */
export class RecipeError extends LatheError {
  readonly issues: RecipeIssue[];
  constructor(issues: RecipeIssue[], where?: string) {
    const head = where ? `${where}: ` : '';
    const n = issues.length;
    super(
      `${head}recipe has ${n} error${n === 1 ? '' : 's'}:\n${issues.map((i) => `  ${i.path || '(root)'}: ${i.message}`).join('\n')}`,
    );
    this.issues = issues;
  }
}

/** Bad input data: names the file and line (1-based) where the fault is. */
export class DataError extends LatheError {
  readonly file: string;
  readonly line: number;
  readonly reason: string;
  constructor(file: string, line: number, reason: string) {
    super(`${file}:${line}: ${reason}`);
    this.file = file;
    this.line = line;
    this.reason = reason;
  }
}
