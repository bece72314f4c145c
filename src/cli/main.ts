import { Command, CommanderError } from 'commander';
import { LatheError } from '../errors.js';
import { VERSION } from '../version.js';
import { register as registerData } from './data.js';
import { register as registerEval } from './eval.js';
import { register as registerExport } from './export.js';
import { register as registerGenerate } from './generate.js';
import { register as registerInit } from './init.js';
import { register as registerRecipe } from './recipe.js';
import { register as registerReproduce } from './reproduce.js';
import { register as registerResume } from './resume.js';
import { register as registerTrain } from './train.js';
import { register as registerValidate } from './validate.js';
import { register as registerRooms } from './rooms.js';
import { register as registerWorker } from './worker.js';
import { register as registerSubmit } from './submit.js';
import { register as registerJobs } from './jobs.js';
import { register as registerCancel } from './cancel.js';
import { register as registerServe } from './serve.js';
import { register as registerEngineNode } from './engine-node.js';

/** Builds the `lathe` command; every verb has --help. */
export function buildProgram(): Command {
  const program = new Command('lathe')
    .description('Train your own language models on your own data.')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  for (const reg of [
    registerInit,
    registerValidate,
    registerRecipe,
    registerData,
    registerTrain,
    registerResume,
    registerReproduce,
    registerGenerate,
    registerEval,
    registerExport,
    registerServe,
  ])
    reg(program);
  registerRooms(program);
  registerWorker(program);
  registerSubmit(program);
  registerJobs(program);
  registerCancel(program);
  registerEngineNode(program);
  program.commands.forEach((c) => c.exitOverride());
  return program;
}

/** Runs the CLI; bad input exits 2 with a message naming the field or file:line, never a stack. */
export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version exit 0; usage errors exit 2 (commander already printed the message).
      process.exitCode = e.exitCode === 0 ? 0 : 2;
      return;
    }
    if (e instanceof LatheError) {
      console.error(`lathe: ${e.message}`);
      process.exitCode = e.exitCode;
      return;
    }
    console.error(`lathe: internal error: ${e instanceof Error ? e.message : String(e)}`);
    if (process.env.LATHE_DEBUG && e instanceof Error) console.error(e.stack);
    process.exitCode = 1;
  }
}
